cd /work/main
B=/tmp/arsync-bench-route
$B sweep --data /dev/shm/rt --datasets small --cache warm --reps 5 --wait 0 --arsync /tmp/arsync-route --out /tmp/route-out \
  --variants ";--route=all=ring;--route=all=worker;--route=open=ring;--route=create=ring;--route=meta=worker;--route=open=worker"
# Re-sync (no change) of the 100k-file tree: the stat route.
SRC=/dev/shm/rt/resync-100000
DST=/dev/shm/rt/.route-resync-dst
rm -rf $DST; /tmp/arsync-route -a $SRC/ $DST/
for rep in 1 2 3 4 5; do
  for r in all=inline stat=ring stat=worker; do
    cat /dev/null; /tmp/arsync-route -a $SRC/ $DST/ >/dev/null  # warm both trees
    s=$(date +%s.%N); /tmp/arsync-route -a --route $r $SRC/ $DST/; e=$(date +%s.%N)
    echo "resync $r rep$rep $(echo "$e - $s" | bc)"
  done
done
echo ROUTEDONE
