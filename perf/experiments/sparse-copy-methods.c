/*
 * sparse-copy-methods.c: the session 25 probe behind perf/README.md ("`sparse` is bound by the
 * copy of its data"). Copies the data extents (SEEK_DATA/SEEK_HOLE) of one sparse file N times
 * into new files of a directory, one after another, and prints the mean time per file. MODE is
 * a bit set: 1 copy_file_range, 2 pread/pwrite through a 4 MiB buffer, neither: mmap + pwrite;
 * 4: fallocate each extent first (as arsync does). CHUNK: bytes per call.
 *
 *   gcc -O2 -o cb perf/experiments/sparse-copy-methods.c
 *   mkdir D && ./cb MODE /var/tmp/ref/sparse/sparse0.img D 8 1048576
 *
 * Not part of the build or the tests: a measurement aid, kept so the figure can be reproduced.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e3+t.tv_nsec/1e6;}
int main(int argc,char**argv){
  int mode=atoi(argv[1]); const char*src=argv[2]; const char*dstdir=argv[3]; int n=atoi(argv[4]); long chunk=atol(argv[5]);
  static char *buf; buf=aligned_alloc(4096, 4<<20); memset(buf,1,4<<20);
  double tot=0;
  for(int i=0;i<n;i++){
    char p[512]; snprintf(p,512,"%s/f%d-%d",dstdir,mode,i);
    double t0=now();
    int s=open(src,O_RDONLY); int d=open(p,O_RDWR|O_CREAT|O_EXCL,0644);
    off_t off=0, end=lseek(s,0,SEEK_END);
    while(1){ off_t ds=lseek(s,off,SEEK_DATA); if(ds<0)break; off_t he=lseek(s,ds,SEEK_HOLE);
      if(mode&4) fallocate(d,0,ds,he-ds);
      off_t o=ds;
      while(o<he){ long len=he-o<chunk?he-o:chunk;
        if(mode&1){ loff_t a=o,b=o; ssize_t r=copy_file_range(s,&a,d,&b,len,0); if(r<=0){perror("cfr");return 1;} o+=r; }
        else if(mode&2){ ssize_t r=pread(s,buf,len,o); pwrite(d,buf,r,o); o+=r;}
        else { char*m=mmap(0,len,PROT_READ,MAP_SHARED|MAP_POPULATE,s,o); pwrite(d,m,len,o); munmap(m,len); o+=len;}
      }
      off=he; }
    ftruncate(d,end); close(s); close(d);
    tot+=now()-t0;
  }
  printf("mode %d chunk %ld: %.3f ms/file\n",mode,chunk,tot/n);
}
