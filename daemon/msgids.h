/*
 * MESSAGE_IDs of the events an operator acts on.  Each is a 128-bit ID in 32
 * hex digits (made with `systemd-id128 new`), passed as log_event()'s msgid;
 * units/cairn.catalog explains each one for `journalctl -x` (what happened,
 * what to check, what to do).  An ID never changes meaning once released:
 * a new kind of event gets a new ID, and the catalog gets its entry in the
 * same commit.
 *
 * The fields listed after each ID are the CAIRN_* fields the event should
 * carry, so that `journalctl MESSAGE_ID=... CAIRN_PEER=...` filters work.
 */
#ifndef CAIRN_DAEMON_MSGIDS_H
#define CAIRN_DAEMON_MSGIDS_H

/* ---- lifecycle */

/* The member has recovered its state and serves clients (READY=1 is sent).
 * Fields: CAIRN_MEMBER, CAIRN_CLUSTER. */
#define MSGID_MEMBER_STARTED "2a45aa518ca7433593822d1a189f8f69"

/* The member stopped cleanly after SIGTERM/SIGINT. Fields: CAIRN_MEMBER. */
#define MSGID_MEMBER_STOPPED "3673da8f3a224c86b8d4e6ad2563c054"

/* SIGHUP handled: TLS files and log level re-read (or a reload failed: then
 * PRIORITY is err and the message says which file). Fields: CAIRN_MEMBER. */
#define MSGID_RELOADED "a4bffe15b9c04ab0b92542e7c8bb1eea"

/* The store's schema is upgraded at start: logged when the copy of every
 * revision begins and when it has committed; the member serves after.
 * Fields: CAIRN_FILE, CAIRN_ROWS, CAIRN_DURATION_MS (when done). */
#define MSGID_STORE_UPGRADE "d6b5eb80e081417b9159be4d75fa7723"

/* ---- Raft leadership and membership */

/* A leader is known at a new term (this member or another).
 * Fields: CAIRN_LEADER, CAIRN_TERM. */
#define MSGID_LEADER_ELECTED "8fae1f6e61ac429c82c5f1b26562851c"

/* The leader this member followed is gone; writes stall until an election.
 * Fields: CAIRN_LEADER (the old one), CAIRN_TERM. */
#define MSGID_LEADER_LOST "d315bbf8d8134a8f8258a8c5915ecf64"

/* A membership change was applied: a member (or learner) added or promoted.
 * Fields: CAIRN_PEER (the member's ID), CAIRN_INDEX. */
#define MSGID_MEMBER_ADDED "6783bc11a0964a7992950dcd27d91ff2"

/* A membership change was applied: a member removed.
 * Fields: CAIRN_PEER, CAIRN_INDEX. */
#define MSGID_MEMBER_REMOVED "12c81b6c20654a0c971e79fb52f779f7"

/* A peer has not been reachable (its queue stalled, dials failing).
 * Fields: CAIRN_PEER, CAIRN_URL when known. */
#define MSGID_PEER_UNREACHABLE "64fbf0a4782d43e6a0ec8daf12844a12"

/* ---- snapshots, compaction, defragmentation */

/* A Raft snapshot was written and the log before it released.
 * Fields: CAIRN_INDEX, CAIRN_TERM. */
#define MSGID_SNAPSHOT_TAKEN "8424768d6f3f4190813699def79d5720"

/* A snapshot received from the leader was installed over the local store.
 * Fields: CAIRN_PEER (the sender), CAIRN_INDEX, CAIRN_TERM, CAIRN_BYTES. */
#define MSGID_SNAPSHOT_INSTALLED "fe79f18b15f745d28ca9eb1e185485c9"

/* Revisions up to a point were compacted (automatic or asked for).
 * Fields: CAIRN_REVISION, CAIRN_DURATION_MS. */
#define MSGID_COMPACTION "c5ca32f969c6429395d8bd3ff3c876f7"

/* The store was defragmented (file rewritten, space returned).
 * Fields: CAIRN_BYTES (before), CAIRN_DURATION_MS. */
#define MSGID_DEFRAG "8b411dbdacac48fc9df61a092dd0611e"

/* ---- alarms */

/* An alarm was raised (NOSPACE, CORRUPT); writes are refused while it stands.
 * Fields: CAIRN_ALARM ("NOSPACE", "CORRUPT"), CAIRN_MEMBER (the member it is for). */
#define MSGID_ALARM_RAISED "4c2ec0c6bd4b4a07b064680f9966c532"

/* An alarm was disarmed. Fields: CAIRN_ALARM, CAIRN_MEMBER. */
#define MSGID_ALARM_CLEARED "36012b71406a46ae95e253ac003ee4e0"

/* ---- auth */

/* An authentication failed (wrong user or password), or a client was refused
 * because it failed too often (rate limit). Fields: CAIRN_USER, CAIRN_REMOTE,
 * CAIRN_CLIENT (the address the limit counts by), CAIRN_FAILURES. */
#define MSGID_AUTH_FAILED "65e14cae160b42b484c9bae7025372d9"

/* Auth was enabled or disabled (applied on every member).
 * Fields: CAIRN_AUTH_REVISION, CAIRN_INDEX. */
#define MSGID_AUTH_CHANGED "5e859ce9080b42b997d9f5af84e2753f"

/* ---- slowness */

/* An fdatasync of the WAL took longer than 1 s. Fields: CAIRN_DURATION_MS. */
#define MSGID_SLOW_FSYNC "5d9415261be24506ba2fd72f545b9b57"

/* A client request took longer than --slow-request-threshold.
 * Fields: CAIRN_METHOD, CAIRN_KEY, CAIRN_DURATION_MS. */
#define MSGID_SLOW_REQUEST "7d3ba88425604802bb44020f7a943934"

/* Applying one batch of committed entries took longer than 100 ms.
 * Fields: CAIRN_DURATION_MS, CAIRN_ENTRIES. */
#define MSGID_SLOW_APPLY "63324fd6f9864db1825890d553d1a734"

/* ---- damage and failures */

/* Corruption found: a WAL record or snapshot failing its checksum, a store
 * behind its snapshot, a hash mismatch between members.
 * Fields: CAIRN_FILE, CAIRN_OFFSET (when a file), CAIRN_INDEX. */
#define MSGID_CORRUPTION "0e8950715a334e02a174a7746d24e69e"

/* A torn WAL tail (a crash mid-write) was cut back to the last whole record
 * at start; nothing acknowledged is lost. Fields: CAIRN_FILE, CAIRN_OFFSET. */
#define MSGID_WAL_REPAIRED "774655178e5646719995a97320b89ccf"

/* The WAL or the store could not be written; the member stops (exit 70).
 * Fields: CAIRN_INDEX when known. */
#define MSGID_STORAGE_FAILURE "ec9fcd1774604873aacbe93824b92263"

/* A TLS handshake failed, or TLS files could not be loaded or reloaded.
 * Fields: CAIRN_PEER or CAIRN_REMOTE_ADDR, CAIRN_URL, CAIRN_FILE. */
#define MSGID_TLS_FAILURE "ecab9e1bf37a49038a3a3f85b1e663d9"

/* Input from a member of another cluster (another --initial-cluster-token)
 * or of a removed member was refused. Fields: CAIRN_PEER, CAIRN_REMOTE_ADDR. */
#define MSGID_CLUSTER_MISMATCH "1850e244f93b48aca07f41d824828846"

#endif
