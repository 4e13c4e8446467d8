/*
 * flat-delegated-creates.c: the session 24 prototype behind perf/README.md ("`flat` is bounded
 * by the directory lock"). Copies the files of one flat directory (data, mode, times) with N
 * threads, either each thread creating its own destination files (mode 0), or with creates
 * delegated (mode 1): a thread that finds another creating in the directory queues its create
 * for that one and goes on with files already created, the holder of the token creating for
 * everyone. Files are handed out one at a time (an atomic cursor).
 *
 *   gcc -O2 -o fl perf/experiments/flat-delegated-creates.c -lpthread
 *   ./fl MODE THREADS SRC_DIR NEW_DST_DIR
 *
 * Not part of the build or the tests: a measurement aid, kept so the figure can be reproduced.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>
static int srcd, dstd, mode, nthr;
static char **names; static int nnames;
typedef struct { int idx; int mode_bits; _Atomic int fd; } req_t; // fd: -2 pending
static req_t *reqs; // one per file
static _Atomic int token; static _Atomic int nexti;
// the create queue: a mutex-guarded ring
static pthread_mutex_t qm = PTHREAD_MUTEX_INITIALIZER;
static int qbuf[1<<20]; static int qh, qt;
static void enq(int i){ pthread_mutex_lock(&qm); qbuf[qt++ & ((1<<20)-1)] = i; pthread_mutex_unlock(&qm);}
static int deq(void){ int r=-1; pthread_mutex_lock(&qm); if(qh!=qt) r=qbuf[qh++ & ((1<<20)-1)]; pthread_mutex_unlock(&qm); return r;}
static int do_create(int i, int m){ return openat(dstd, names[i], O_CREAT|O_EXCL|O_WRONLY|O_CLOEXEC, m); }
static void drain(void){ int i; while((i=deq())>=0){ int fd=do_create(i, reqs[i].mode_bits); atomic_store_explicit(&reqs[i].fd, fd<0?-1:fd, memory_order_release);} }
typedef struct { int sfd; struct stat st; } st_t;
static void finish(int i, int sfd, struct stat *st, int dfd, char *buf){
  ssize_t n = pread(sfd, buf, 1<<20, 0); if(n>0) pwrite(dfd, buf, n, 0);
  struct timespec ts[2] = { st->st_atim, st->st_mtim }; futimens(dfd, ts);
  close(dfd); close(sfd);
}
static void *worker(void *arg){
  (void)arg; char *buf=malloc(1<<20);
  int D=64; int *pend=malloc(sizeof(int)*D); int *psfd=malloc(sizeof(int)*D); struct stat *pst=malloc(sizeof(struct stat)*D); int np=0;
  for(int i=atomic_fetch_add(&nexti,1);i<nnames;i=atomic_fetch_add(&nexti,1)){
    int sfd=openat(srcd, names[i], O_RDONLY|O_CLOEXEC|O_NOFOLLOW); struct stat st; fstat(sfd,&st);
    if(mode==0){ int dfd=do_create(i, st.st_mode&07777); finish(i,sfd,&st,dfd,buf); continue; }
    int exp=0;
    if(atomic_compare_exchange_strong(&token,&exp,1)){
      int dfd=do_create(i, st.st_mode&07777); drain(); atomic_store(&token,0); drain_after:
      // someone may have enqueued after our drain but saw token taken: retry
      if(qh!=qt){ exp=0; if(atomic_compare_exchange_strong(&token,&exp,1)){ drain(); atomic_store(&token,0); goto drain_after; } }
      finish(i,sfd,&st,dfd,buf);
    } else {
      reqs[i].mode_bits=st.st_mode&07777; atomic_store(&reqs[i].fd,-2); enq(i);
      pend[np]=i; psfd[np]=sfd; pst[np]=st; np++;
    }
    // completions
    for(;;){
      for(int k=0;k<np;){ int fd=atomic_load_explicit(&reqs[pend[k]].fd, memory_order_acquire);
        if(fd!=-2){ finish(pend[k],psfd[k],&pst[k],fd,buf); np--; pend[k]=pend[np]; psfd[k]=psfd[np]; pst[k]=pst[np]; } else k++; }
      if(np<D) break;
      exp=0; if(atomic_compare_exchange_strong(&token,&exp,1)){ drain(); atomic_store(&token,0);} 
    }
  }
  while(np>0){ int exp=0; if(atomic_compare_exchange_strong(&token,&exp,1)){ drain(); atomic_store(&token,0);} 
      for(int k=0;k<np;){ int fd=atomic_load_explicit(&reqs[pend[k]].fd, memory_order_acquire);
        if(fd!=-2){ finish(pend[k],psfd[k],&pst[k],fd,buf); np--; pend[k]=pend[np]; psfd[k]=psfd[np]; pst[k]=pst[np]; } else k++; } }
  return 0;
}
int main(int argc,char**argv){
  mode=atoi(argv[1]); nthr=atoi(argv[2]);
  srcd=open(argv[3],O_RDONLY|O_DIRECTORY); mkdir(argv[4],0755); dstd=open(argv[4],O_RDONLY|O_DIRECTORY);
  DIR*d=fdopendir(dup(srcd)); struct dirent*e; names=malloc(sizeof(char*)*200000);
  while((e=readdir(d))) if(e->d_name[0]!='.') names[nnames++]=strdup(e->d_name);
  reqs=calloc(nnames,sizeof(req_t));
  pthread_t th[64]; for(long i=0;i<nthr;i++) pthread_create(&th[i],0,worker,(void*)i);
  for(int i=0;i<nthr;i++) pthread_join(th[i],0);
  return 0;
}
