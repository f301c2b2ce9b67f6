/*
 * The alarms part's pure logic, apart from the node and the network so unit
 * tests can drive it (test/unit/test_alarm.c): the alarm set and its record,
 * the capped applier's decision, and the corruption check's rounds.
 */
#ifndef CAIRN_DAEMON_ALARM_INTERNAL_H
#define CAIRN_DAEMON_ALARM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

struct mvcc_request;

/* Room for both alarm types on CONFIG_MAX_MEMBERS members, and as many again for
 * members that left with an alarm still raised. */
#define ALARM_MAX 64
/* Reports kept per corruption-check round: one per member; more are ignored. */
#define ALARM_MAX_REPORTS 32

/* The record holding the current corruption-check round (alarm_internal's format). */
#define ALARM_CHECK_RECORD_NAME "check"

struct alarm_entry {
    uint64_t member;
    int type; /* cairn.AlarmType */
};

/* The active alarms, sorted by (member, type) so every member packs them alike. */
struct alarm_set {
    size_t n;
    struct alarm_entry a[ALARM_MAX];
};

/* alarm_set_has: 1 if an alarm of type (0: any) is active on any member. */
int alarm_set_has(const struct alarm_set *s, int type);

/*
 * alarm_set_change: ACTIVATE (1) or DEACTIVATE (2) as a cairn.AlarmRequest
 * asks; on DEACTIVATE member 0 and type 0 (NONE) match every member and
 * every type.  changed (may be NULL) gets the entries added or removed.
 * Returns how many changed, -CAIRN_E_INVALID_ARGUMENT (an ACTIVATE of NONE or of
 * member 0, an unknown action), -CAIRN_E_TOO_MANY_REQUESTS (the set is full).
 */
int alarm_set_change(struct alarm_set *s, int action, uint64_t member, int type, struct alarm_set *changed);

/* alarm_set_pack: s as a packed cairn.AlarmResponse into buf (room for alarm_set_packed_size). */
size_t alarm_set_packed_size(const struct alarm_set *s);
size_t alarm_set_pack(const struct alarm_set *s, uint8_t *buf);
/* alarm_set_unpack: a packed cairn.AlarmResponse -> s (sorted, duplicates dropped).  0 or -CAIRN_E_CORRUPT. */
int alarm_set_unpack(struct alarm_set *s, const void *data, size_t len);

/* alarm_type_name: "NOSPACE", "CORRUPT", "NONE" (or "UNKNOWN"). */
const char *alarm_type_name(int type);

/*
 * alarm_capped: the capped applier's decision for a request about to be
 * applied: CAIRN_E_NO_SPACE while NOSPACE is active and req adds data (a
 * put, a txn with a put in either branch, a lease grant); CAIRN_E_CORRUPT
 * while CORRUPT is active and req writes anything (put, delete, a txn with
 * a write, compaction, lease grant or revoke).  0: apply it.
 */
int alarm_capped(const struct alarm_set *s, const struct mvcc_request *req);

/* One member's answer to a corruption check. */
struct hash_report_entry {
    uint64_t member;
    uint32_t hash;
    int64_t compact_revision;
};

/* A corruption-check round: the revision the leader asked for and the reports in so far. */
struct hash_round {
    int64_t revision; /* 0: no round */
    size_t n;
    struct hash_report_entry r[ALARM_MAX_REPORTS];
};

/* hash_round_add: add member's report; 1 if added, 0 if the member already reported or the round is full. */
int hash_round_add(struct hash_round *r, uint64_t member, uint32_t hash, int64_t compact_revision);

/* The round as a record value (a fixed little-endian layout, versioned): size and pack. */
size_t hash_round_packed_size(const struct hash_round *r);
size_t hash_round_pack(const struct hash_round *r, uint8_t *buf);
/* hash_round_unpack: 0 or -CAIRN_E_CORRUPT. */
int hash_round_unpack(struct hash_round *r, const void *data, size_t len);

/*
 * hash_round_outliers: the members whose hash differs from the majority's.
 * Only reports with the round's most common compact revision are compared
 * (a member that hashed after a later compaction is not a witness); the
 * majority is a hash more than half of them hold, so two reports that differ
 * decide nothing.  Writes up to max member IDs to out and the majority hash
 * to *majority; returns how many members differ (0 when all agree or no
 * hash has a majority).
 */
size_t hash_round_outliers(const struct hash_round *r, uint64_t *out, size_t max, uint32_t *majority);

#endif
