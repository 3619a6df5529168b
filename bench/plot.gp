# bench/plot.gp: delivery latency against load for the three servers.
#
# Input: bench/results/room-latency.dat, written by
#   bench/compare room --rates 0.1,0.2,0.4,0.8
# (one row per rate; for each server: offered deliveries/s, delivered/s,
# p50 ms, p99 ms; NaN where a server was not measured).
# Run:   gnuplot -e "dat='bench/results/room-latency.dat'" bench/plot.gp
# Output: bench/results/latency.png (or out='...').

if (!exists("dat")) dat = 'bench/results/room-latency.dat'
if (!exists("out")) out = 'bench/results/latency.png'

set terminal pngcairo size 900,560 noenhanced font ",10"
set output out
set title "BOSH groupchat delivery latency vs load (loopback, 2 cores)"
set xlabel "offered load: deliveries/s (messages sent x other occupants / duration)"
set ylabel "latency (ms)"
set logscale y
set grid
set key top left
set datafile missing "NaN"

# columns: 1 rate | ours 2-5 | prosody 6-9 | ejabberd 10-13
plot dat using 2:4  with linespoints lt 1 pt 7 title "ours p50", \
     dat using 2:5  with linespoints lt 1 pt 6 dt 2 title "ours p99", \
     dat using 6:8  with linespoints lt 2 pt 5 title "Prosody p50", \
     dat using 6:9  with linespoints lt 2 pt 4 dt 2 title "Prosody p99", \
     dat using 10:12 with linespoints lt 3 pt 9 title "ejabberd p50", \
     dat using 10:13 with linespoints lt 3 pt 8 dt 2 title "ejabberd p99"
