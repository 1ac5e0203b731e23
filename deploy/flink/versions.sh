# The Flink release deploy/flink/cluster.sh starts, and so the --flink_version (its minor version)
# that deploy/flink/submit.sh and the job-server jar must match. Flink 1.20 is in Beam 2.77's list
# (1.19, 1.20, 2.0, 2.1, 2.2) and is Flink's long-term-support release of the 1.x line.
FLINK_VERSION_DEFAULT=1.20.5
