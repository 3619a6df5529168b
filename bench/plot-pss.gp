# bench/plot-pss.gp: memory (PSS of every server process) over time in one
# bench/run, for several runs side by side: is memory flat while chatting?
#
# Input: bench/results/team-memory.dat, one block per run (two blank lines
# between blocks; first line "# label"), columns: seconds since the load
# started, PSS MiB of everything, PSS MiB of apache2 alone. Written by
#   bench/pss-series bench/results/team-memory.jsonl > bench/results/team-memory.dat
# Run:   gnuplot bench/plot-pss.gp
# Output: bench/results/team-memory.png (or out='...').

if (!exists("dat")) dat = 'bench/results/team-memory.dat'
if (!exists("out")) out = 'bench/results/team-memory.png'

set terminal pngcairo size 900,560 noenhanced font ",10"
set output out
set title "ours, team scenario, 500 users: PSS of httpd + chatd + Redis over time (sign-in 0-30 s, chat 30-180 s)"
set xlabel "seconds since the load started"
set ylabel "PSS (MiB)"
set grid
set key right center
set yrange [0:*]
stats dat using 1 nooutput
plot for [i=0:STATS_blocks-1] dat index i using 1:2 with linespoints pt 7 ps 0.5 title columnheader(1)
