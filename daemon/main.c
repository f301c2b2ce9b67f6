/*
 * cairnd: a Cairn cluster member.  main() reads the configuration, recovers
 * or bootstraps the data directory, starts the node thread, the read path
 * and the client server, then waits for signals: SIGHUP re-reads the TLS
 * files, SIGTERM/SIGINT drain and stop cleanly.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "base/deadline.h"
#include "base/errors.h"
#include "base/log.h"
#include "daemon/msgids.h"
#include "daemon/activation.h"
#include "daemon/backup.h"
#include "daemon/alarm.h"
#include "daemon/auth.h"
#include "daemon/boot.h"
#include "daemon/compactor.h"
#include "daemon/config.h"
#include "daemon/leader.h"
#include "daemon/lease.h"
#include "daemon/maint.h"
#include "daemon/metrics.h"
#include "daemon/members.h"
#include "daemon/node.h"
#include "daemon/peer.h"
#include "daemon/reads.h"
#include "daemon/restore.h"
#include "daemon/rpc.h"
#include "daemon/wait.h"
#include "daemon/watch.h"
#include "raft/raft.h"
#include "storage/wal.h"

#define EXIT_CONFIG 78 /* sysexits' EX_CONFIG: systemd need not retry a bad configuration */
#define READER_THREADS 2

/* the metrics listener (--listen-metrics-urls), or NULL: stopped before everything it reads */
static struct metrics *metrics;

/* The alarms as the metrics part sees them (its sources take a callback, not the alarms part). */
static int metrics_alarm(void *arg, int type)
{
    return alarm_active(arg, type);
}

/* the alarms: started after the lessor, stopped before the node (its checker proposes) */
static struct alarms *alarms;
/* users, roles and tokens: started with the alarms, stopped before the node (its worker proposes) */
static struct auth *auth;

/* snapshot saves, move-leader, auto-compaction: stopped before the node (they propose or read), the
 * copies deleted once the client contexts are closed */
static struct backups *backups;
static struct leader_mover *mover;
static struct compactor *compactor;

/* `cairnd wal dump DIR`: the WAL records for an operator (exit 0 intact, 1 torn tail, 2 corrupt, 3 unreadable). */
static int wal_dump_cmd(const char *dir)
{
    int rc = wal_dump(dir, stdout);
    if (rc == 0 || rc == 1)
        return rc;
    if (rc == -CAIRN_E_CORRUPT)
        return 2;
    fprintf(stderr, "cairnd: cannot read %s: %s\n", dir, cairn_strerror(rc));
    return 3;
}

static void notify_status(const struct config *cfg, struct node *n)
{
    struct node_info in;
    node_get_info(n, &in);
    sd_notifyf(0, "STATUS=%s %s, term %" PRIu64 ", leader %016" PRIx64 ", revision %" PRId64 ", applied %" PRIu64
                  ", %s",
               cfg->name, raft_role_name(in.role), in.term, in.lead, in.revision, in.applied,
               in.lead ? "healthy" : "no leader");
}

/*
 * A crash leaves its stack in the log (stderr, which the journal takes under
 * systemd): the thread's name and the frames, symbolised as cairnd is linked
 * with -rdynamic.  Only async-signal-safe calls (backtrace() is loaded
 * before, by a first call at start), then the signal is raised again with
 * its default action, so the exit status and any core dump stay as they were.
 * Not under the sanitizers, which report crashes themselves.
 */
#ifndef CAIRN_SANITIZE
static void on_fatal_signal(int sig)
{
    char head[96] = "cairnd: fatal signal ";
    size_t n = strlen(head);
    char num[12];
    int k = 0;
    for (int v = sig; v > 0 && k < 11; v /= 10)
        num[k++] = (char)('0' + v % 10);
    while (k > 0 && n < sizeof head - 1)
        head[n++] = num[--k];
    const char *in = " in thread ";
    for (size_t i = 0; in[i] && n < sizeof head - 1; i++)
        head[n++] = in[i];
    char name[16] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    for (size_t i = 0; name[i] && n < sizeof head - 2; i++)
        head[n++] = name[i];
    head[n++] = '\n';
    if (write(STDERR_FILENO, head, n) < 0)
        _exit(128 + sig);
    void *frames[64];
    int depth = backtrace(frames, 64);
    backtrace_symbols_fd(frames, depth, STDERR_FILENO);
    signal(sig, SIG_DFL);
    raise(sig);
}
#endif

static void catch_fatal_signals(void)
{
#ifndef CAIRN_SANITIZE
    void *warm[1];
    backtrace(warm, 1); /* loads libgcc's unwinder now, not inside the handler */
    const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa = {.sa_handler = on_fatal_signal, .sa_flags = SA_RESETHAND | SA_NODEFER};
        sigaction(sigs[i], &sa, NULL);
    }
#endif
}

/*
 * The member's directories as opened.  A WAL whose directory was removed
 * or replaced keeps appending to files nobody will read again: every write
 * acknowledged from then on would be lost at the next start, and the
 * member's vote with it.  The main loop compares them every second.
 */
struct dir_id {
    const char *path;
    dev_t dev;
    ino_t ino;
};

static int dir_remember(struct dir_id *d, const char *path)
{
    struct stat st;
    d->path = path;
    if (stat(path, &st) < 0)
        return -errno;
    d->dev = st.st_dev;
    d->ino = st.st_ino;
    return 0;
}

/* NULL while d is the directory it was, else why not. */
static const char *dir_changed(const struct dir_id *d)
{
    struct stat st;
    if (stat(d->path, &st) < 0)
        return errno == ENOENT ? "was removed" : strerror(errno);
    return st.st_dev == d->dev && st.st_ino == d->ino ? NULL : "was replaced by another directory";
}

/* Stop taking requests, give those in flight up to the request timeout, then stop everything. */
static void shut_down(const struct config *cfg, struct rpc *rpc, struct reads *rs, struct node *n,
                      struct wait_table *w, struct lessor *leases, struct watch_hub *watches)
{
    sd_notify(0, "STOPPING=1");
    log_notice(NULL, "stopping: finishing %zu request(s) in flight", rpc_busy(rpc));
    rpc_drain(rpc);
    metrics_stop(metrics); /* /readyz and the rest stop answering before anything they read stops */
    watch_stop(watches); /* parked polls answer now instead of holding the drain up */
    int64_t deadline = mono_now_ms() + cfg->request_timeout_ms;
    while (rpc_busy(rpc) && mono_now_ms() < deadline)
        usleep(10000);
    leader_stop(mover);
    compactor_stop(compactor);
    lease_stop(leases);
    alarm_stop(alarms);
    auth_stop(auth);
    reads_stop(rs);
    node_stop(n);
    lease_free(leases);
    alarm_free(alarms);
    auth_free(auth);
    /* What still waits was proposed (the node failed the rest, STOPPED): it
     * may yet be committed and applied, by this member after a restart or
     * by the others, so its outcome is unknown.  STOPPED stays the answer to
     * what was refused before it was proposed, which a client may retry. */
    wait_free(w, CAIRN_E_TIMEOUT);
    rpc_stop(rpc);
    backup_stop(backups);
    metrics_free(metrics);
    watch_free(watches);
}

/*
 * boot_open's key index build frees its scaffolding (a hash table and an
 * array of the keys) when it is done.  glibc hands blocks that large back
 * to the system at once; tcmalloc, which the Makefile links (MALLOC), keeps
 * them for later allocations unless asked: 5-7 MB of RSS with 1M keys
 * (docs/performance.md, session 18).  Looked up, not linked, so a build
 * with glibc's malloc has nothing to call.
 */
static void return_free_memory(void)
{
    void (*release)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "MallocExtension_ReleaseFreeMemory");
    if (release)
        release();
}

/*
 * nng's task threads at SCHED_BATCH.  nng hands every completion it does
 * not run inline to its pool of task threads (nng names them "nng:task"):
 * a client's request to decode, a reply's send.  A thread woken for one,
 * at the normal policy, preempts the thread that woke it if both CPUs are
 * busy: the reply sender was preempted by them about 6,000 times a second
 * in the middle of a batch of replies at 256 puts in flight, and each time
 * waited for a CPU while the task thread ran.  A SCHED_BATCH thread takes
 * an idle CPU at once as before, but never preempts on waking: it runs
 * when the CPU's current thread blocks or its time slice ends, and then
 * finds several tasks queued.  Its share of the CPU is the same (fairness
 * is unchanged; only wake-up preemption is off).  Measured on a 2-vCPU
 * guest (docs/performance.md, session 21): the member's CPU per put 7-14%
 * lower at 256 in flight and 8% at 64, per get 4% (serializable) to 10%
 * (linearizable) lower; three members' put 64 3-6% more puts/s; one
 * request in flight unchanged.
 *
 * Only threads at the normal policy change: a unit that set another one
 * (CPUSchedulingPolicy=) keeps it.  nng starts its task threads when the
 * first socket opens and never more, so one pass after the sockets are
 * open finds them all.  Done here, not in third_party/nng's taskq patch:
 * that nng is also libcairn's and cairn-bench's, and a client library has
 * no business changing its application's threads.  Returns how many
 * changed; a failure is logged and the member runs on as before.
 */
static int batch_nng_task_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d) {
        log_warning(NULL, "cannot list /proc/self/task (%s): nng's task threads keep the normal scheduling policy",
                    strerror(errno));
        return 0;
    }
    int changed = 0, failed = 0, err = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[64], comm[32] = "";
        pid_t tid = (pid_t)strtol(e->d_name, NULL, 10);
        if (tid <= 0)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int)tid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* gone since the listing */
        bool task = fgets(comm, sizeof comm, f) && !strcmp(comm, "nng:task\n");
        fclose(f);
        if (!task || sched_getscheduler(tid) != SCHED_OTHER)
            continue;
        struct sched_param sp = {.sched_priority = 0};
        if (sched_setscheduler(tid, SCHED_BATCH, &sp) == 0) {
            changed++;
        } else {
            failed++;
            err = errno;
        }
    }
    closedir(d);
    if (failed)
        log_warning(NULL, "%d of nng's task threads keep the normal scheduling policy: SCHED_BATCH refused (%s)",
                    failed, strerror(err));
    return changed;
}

int main(int argc, char **argv)
{
    struct config cfg;
    char err[2048] = "";
    int rc;

    if (argc >= 2 && !strcmp(argv[1], "wal")) {
        if (argc != 4 || strcmp(argv[2], "dump")) {
            fprintf(stderr, "usage: cairnd wal dump DIR\n");
            return 2;
        }
        return wal_dump_cmd(argv[3]);
    }
    if (argc >= 2 && !strcmp(argv[1], "restore"))
        return restore_main(argc, argv);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            config_print_help(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("cairnd %s\n", CAIRN_VERSION);
            return 0;
        }
    }
    if (config_load(&cfg, argc, argv, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "cairnd: %s\n", err);
        fprintf(stderr, "cairnd: see cairnd --help\n");
        return EXIT_CONFIG;
    }
    log_setup("cairnd", cfg.log_target, cfg.log_level);
    int64_t retention;
    if (compactor_parse_retention(cfg.auto_compaction_mode, cfg.auto_compaction_retention, &retention, err,
                                  sizeof err) < 0) {
        fprintf(stderr, "cairnd: %s\n", err);
        config_free(&cfg);
        return EXIT_CONFIG;
    }

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* before any thread starts: they all inherit it */
    signal(SIGPIPE, SIG_IGN);
    catch_fatal_signals();

    if ((rc = activation_init(err, sizeof err)) < 0) {
        log_err(NULL, "socket activation: %s", err);
        config_free(&cfg);
        return EXIT_CONFIG;
    }

    struct boot_state bs;
    if ((rc = boot_open(&cfg, &bs, err, sizeof err)) < 0) {
        log_err(NULL, "cannot start: %s", err);
        config_free(&cfg);
        return rc == -CAIRN_E_CONFIG || rc == -CAIRN_E_CLUSTER_ID_MISMATCH ? EXIT_CONFIG : 1;
    }
    return_free_memory();
    struct wait_table *waits = wait_new();
    struct reads *rs = reads_new(READER_THREADS);
    struct node_hooks hooks = {0};
    struct node *n = NULL;
    struct rpc *rpc = NULL;
    if (!waits || !rs) {
        log_err(NULL, "out of memory");
        return 1;
    }
    reads_hooks(rs, &hooks);
    if ((rc = node_start(&cfg, &bs, waits, &hooks, &n, err, sizeof err)) < 0) {
        log_err(NULL, "cannot start the member: %s", err);
        boot_close(&bs);
        reads_stop(rs);
        wait_free(waits, CAIRN_E_STOPPED);
        config_free(&cfg); /* exits free what they made: under the sanitizers a leak changes the exit code */
        return rc == -CAIRN_E_CONFIG ? EXIT_CONFIG : 1;
    }
    uint64_t self = bs.self_id, cluster = bs.cluster_id;
    struct dir_id dirs[2];
    for (int i = 0; i < 2; i++)
        if ((rc = dir_remember(&dirs[i], i ? bs.wal_dir : bs.member_dir)) < 0) {
            log_err(NULL, "cannot start: %s: %s", dirs[i].path, strerror(-rc));
            boot_close(&bs);
            reads_stop(rs);
            node_stop(n);
            wait_free(waits, CAIRN_E_STOPPED);
            config_free(&cfg);
            return 1;
        }
    /* READY=1 once the recovered commit index is applied; a joining member once it caught up with a leader */
    uint64_t ready_at = bs.restore.hard_state.commit;
    int joining = bs.joining;
    boot_close(&bs);
    struct lessor *leases = NULL;
    struct watch_hub *watches = NULL;
    struct members *members = NULL;
    struct rpc_route routes[64];
    size_t n_routes = 0;
    if ((rc = reads_start(rs, n)) == 0 && (rc = lease_start(&cfg, n, &leases)) == 0 &&
        (rc = members_start(&cfg, n, &members)) == 0) {
        n_routes += lease_routes(leases, routes + n_routes, 64 - n_routes);
        n_routes += maint_routes(routes + n_routes, 64 - n_routes);
        n_routes += members_routes(members, routes + n_routes, 64 - n_routes);
        if ((rc = backup_start(&cfg, n, &backups)) == 0 && (rc = leader_start(&cfg, n, &mover)) == 0) {
            n_routes += backup_routes(backups, routes + n_routes, 64 - n_routes);
            n_routes += leader_routes(mover, routes + n_routes, 64 - n_routes);
        }
        if (rc == 0 && (rc = watch_start(&cfg, n, &watches, err, sizeof err)) == 0) {
            size_t nw;
            const struct rpc_route *wr = watch_routes(watches, &nw);
            for (size_t i = 0; i < nw && n_routes < 64; i++)
                routes[n_routes++] = wr[i];
        }
    }
    struct rpc_hooks rpc_hooks = {0};
    if (rc == 0 && (rc = alarm_start(&cfg, n, &alarms)) == 0) {
        n_routes += alarm_routes(alarms, routes + n_routes, sizeof routes / sizeof routes[0] - n_routes);
        n_routes += maint_defrag_routes(n, routes + n_routes, sizeof routes / sizeof routes[0] - n_routes);
        alarm_hooks(alarms, &rpc_hooks);
    }
    if (rc == 0 && (rc = auth_start(&cfg, n, waits, &auth)) == 0) {
        n_routes += auth_routes(auth, routes + n_routes, sizeof routes / sizeof routes[0] - n_routes);
        auth_hooks(auth, &rpc_hooks);
    }
    if (rc == 0 && cfg.listen_metrics_urls.n > 0) {
        struct metrics_sources msrc = {
            .watches = watches, .leases = leases, .reads = rs, .alarm_active = metrics_alarm, .alarm_arg = alarms};
        if ((rc = metrics_start(&cfg, n, &msrc, &metrics, err, sizeof err)) == 0)
            metrics_hooks(metrics, &rpc_hooks);
        else
            log_err(NULL, "cannot serve metrics: %s", err);
    }
    if (rc == 0) {
        node_release(n); /* every part that observes applies is registered: replay and apply from here */
        rc = rpc_start(&cfg, n, rs, waits, routes, n_routes, &rpc_hooks, &rpc, err, sizeof err);
    }
    if (rc < 0) {
        log_err(NULL, "cannot serve clients: %s", rc == -CAIRN_E_CONFIG ? err : cairn_strerror(rc));
        leader_stop(mover);
        metrics_stop(metrics);
        watch_stop(watches);
        lease_stop(leases);
        alarm_stop(alarms);
        auth_stop(auth);
        reads_stop(rs);
        node_stop(n);
        lease_free(leases);
        metrics_free(metrics);
        alarm_free(alarms);
        auth_free(auth);
        watch_free(watches);
        wait_free(waits, CAIRN_E_STOPPED);
        backup_stop(backups);
        members_free(members);
        config_free(&cfg);
        return EXIT_CONFIG;
    }
    int batched = batch_nng_task_threads();
    log_debug(NULL, "%d nng task threads at SCHED_BATCH", batched);
    if (compactor_start(&cfg, n, &compactor, err, sizeof err) < 0)
        log_err(NULL, "auto-compaction is off: cannot start it: %s", err[0] ? err : "out of resources");
    char unadopted[1024];
    if (activation_describe_unadopted(unadopted, sizeof unadopted)) {
        log_err(NULL, "socket activation passed sockets no listener is configured for: %s; "
                      "match the socket unit's ListenStream= to --listen-client-urls, --listen-peer-urls and "
                      "--listen-admin-url",
                unadopted);
        shut_down(&cfg, rpc, rs, n, waits, leases, watches);
        members_free(members);
        config_free(&cfg);
        return EXIT_CONFIG;
    }
    log_event(LOG_LEVEL_NOTICE, MSGID_MEMBER_STARTED, LOG_FIELDS(LOG_HEX("CAIRN_MEMBER", self), LOG_HEX("CAIRN_CLUSTER", cluster)),
               "cairnd %s: member '%s' (%016" PRIx64 ") of cluster %016" PRIx64
               " serving clients on %s, peers on %s, admin on %s",
               CAIRN_VERSION, cfg.name, self, cluster, cfg.listen_client_urls.v[0].url, cfg.listen_peer_urls.v[0].url,
               cfg.listen_admin_url.url ? cfg.listen_admin_url.url : "-");
    uint64_t wd_usec = 0;
    if (sd_watchdog_enabled(0, &wd_usec) > 0)
        node_set_watchdog(n, wd_usec);
    int ready = 0;
    int64_t last_extend = 0;
    int exit_code = 0; /* EXIT_CONFIG when the data directory went away under the member */

    for (;;) {
        if (!ready) {
            struct node_info in;
            node_get_info(n, &in);
            if (joining ? in.lead && in.commit && in.applied >= in.commit : in.applied >= ready_at) {
                sd_notify(0, "READY=1");
                log_info(LOG_FIELDS(LOG_U64("CAIRN_INDEX", in.applied)), "ready: applied through %" PRIu64,
                         in.applied);
                ready = 1;
            } else if (mono_now_ms() - last_extend > 10000) {
                /* still replaying or catching up: ask systemd for more time */
                sd_notify(0, "EXTEND_TIMEOUT_USEC=30000000");
                last_extend = mono_now_ms();
            }
        }
        struct timespec ts = {.tv_sec = ready ? 1 : 0, .tv_nsec = ready ? 0 : 100000000};
        int sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT)
            break;
        if (sig == SIGHUP) {
            sd_notify(0, "RELOADING=1");
            int bad = 0;
            if (rpc_reload_tls(rpc, err, sizeof err) < 0) {
                log_event(LOG_LEVEL_ERR, MSGID_RELOADED, NULL, "reload: client TLS: %s", err);
                bad = 1;
            }
            if (node_reload_peer_tls(n, err, sizeof err) < 0) {
                log_event(LOG_LEVEL_ERR, MSGID_RELOADED, NULL, "reload: peer TLS: %s", err);
                bad = 1;
            }
            struct config fresh;
            if (config_load(&fresh, argc, argv, NULL, err, sizeof err) == 0) {
                log_set_level(fresh.log_level);
                config_free(&fresh);
            } else {
                log_event(LOG_LEVEL_ERR, MSGID_RELOADED, NULL, "reload: the configuration no longer loads (%s); keeping the running one", err);
                bad = 1;
            }
            if (!bad)
                log_event(LOG_LEVEL_NOTICE, MSGID_RELOADED, NULL, "reloaded the TLS files and the log level");
            if (ready)
                sd_notify(0, "READY=1");
        }
        notify_status(&cfg, n);
        struct node_info now;
        node_get_info(n, &now);
        if (now.removed) {
            /* etcd's behaviour: a removed member stops; exit 0 so systemd does not restart it */
            log_notice(NULL, "this member was removed from the cluster: stopping");
            break;
        }
        const char *why = NULL;
        size_t gone = 0;
        for (; gone < 2 && !(why = dir_changed(&dirs[gone])); gone++)
            ;
        if (why) {
            /* Exit 78 so systemd does not start it again on its own: a member started
             * afresh in place of one that lost its state could vote twice in a term. */
            log_event(LOG_LEVEL_CRIT, MSGID_STORAGE_FAILURE, LOG_FIELDS(LOG_STR("CAIRN_PATH", dirs[gone].path)),
                      "%s %s while the member ran: stopping, as writes acknowledged from now on would not be "
                      "stored; restore the data directory (or remove this member and add it again) before "
                      "starting it",
                      dirs[gone].path, why);
            exit_code = EXIT_CONFIG;
            break;
        }
    }
    shut_down(&cfg, rpc, rs, n, waits, leases, watches);
    members_free(members);
    if (!exit_code)
        log_event(LOG_LEVEL_NOTICE, MSGID_MEMBER_STOPPED, NULL, "stopped cleanly");
    config_free(&cfg);
    return exit_code;
}
