/*
 * `cairnd restore SNAPSHOT [options]`: make a member of a new cluster from a
 * snapshot saved with the Snapshot call (etcdutl snapshot restore is the
 * model).  Offline: no daemon runs.
 */
#ifndef CAIRN_DAEMON_RESTORE_H
#define CAIRN_DAEMON_RESTORE_H

/* Exit codes: 0 done, 78 bad arguments (usage, options, a data directory in use, no such file), 1 a
 * damaged snapshot or a failure while writing. */
int restore_main(int argc, char **argv);

#endif
