"""What runs the job on this machine: the runner's choice, Prism and Flink binaries, the worker
watchdog and the streaming run's watch (summary refresh, Ctrl-C drain)."""
