"""faults: what the harness does to a running cluster, one fault at a time,
on a seeded schedule.  Each fault injects, holds for a while (the load goes
on), heals, and writes `fault T START|STOP NAME ARGS` records (T on
CLOCK_MONOTONIC, the recorder's clock) through the harness's log_fault.
Every wait is bounded; a fault that cannot be made (no leader known, the
cluster refused a membership change) is skipped and says why.
"""
import os
import random
import signal
import subprocess
import time

import cluster_ns
from cluster_ns import ELECTION_MS, wire

# Every fault kind, in the order of the report.  "mixed" picks among all of them.
KINDS = ["kill-leader", "kill-follower", "kill-majority", "kill-all", "term-leader", "pause-leader",
         "partition-leader", "partition-split", "partition-asym", "loss", "membership",
         "disk-full", "torn-wal", "compact"]
# What a one-member cluster can be put through (no followers, no network between members).
SOLO_KINDS = ["kill-leader", "kill-all", "term-leader", "pause-leader", "torn-wal", "compact"]


class Skip(Exception):
    """This fault cannot be made now (the reason is reported, nothing was done)."""


def sleep_until(t):
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.1))


class Faults:
    def __init__(self, h, rng):
        self.h = h            # the harness: cluster, net, log_fault, end time, build dir
        self.c = h.cluster
        self.net = h.net
        self.rng = rng
        self.counts = {}      # kind -> injected
        self.skipped = {}     # kind -> [reasons]
        self.snap_before = 0

    # ---- helpers
    def hold(self, lo, hi):
        """Sleep a random time in [lo, hi] s, but not past the run's end + 1 s."""
        t = time.monotonic() + self.rng.uniform(lo, hi)
        sleep_until(min(t, max(self.h.load_end + 1.0, time.monotonic())))

    def leader(self):
        lead = self.c.leader()
        if lead is None:
            try:
                lead = cluster_ns.poll(self.c.leader, 5, "a leader")
            except TimeoutError:
                raise Skip("no leader known")
        return lead

    def follower(self, lead=None):
        fs = self.c.followers(lead or self.leader())
        if not fs:
            raise Skip("no follower up")
        return self.rng.choice(fs)

    def start(self, kind, args):
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.h.log_fault("START", kind, args)

    def stop(self, kind, args):
        self.h.log_fault("STOP", kind, args)

    def restart(self, members):
        for m in members:
            m.note_exit()
            if not m.running:
                m.start()

    # ---- the faults
    def kill_leader(self):
        m = self.leader()
        self._kill("kill-leader", [m])

    def kill_follower(self):
        self._kill("kill-follower", [self.follower()])

    def kill_majority(self):
        ms = list(self.c)
        k = len(ms) // 2 + 1
        lead = self.c.leader()
        chosen = self.rng.sample(ms, k)
        if lead and lead not in chosen and self.rng.random() < 0.5:
            chosen[0] = lead
        self._kill("kill-majority", chosen)

    def kill_all(self):
        self._kill("kill-all", list(self.c))

    def term_leader(self):
        """SIGTERM the leader under load, then start it again: it refuses what
        arrives meanwhile with STOPPED (which the recorder counts as not
        applied, and the checker holds it to), lets what is in flight finish
        and must exit 0."""
        m = self.leader()
        args = "members=%s" % m.name
        self.start("term-leader", args)
        m.terminate()
        self.hold(0.3, 3.0)
        self.restart([m])
        self.stop("term-leader", args)

    def _kill(self, kind, ms):
        args = "members=" + ",".join(m.name for m in ms)
        self.start(kind, args)
        for m in ms:
            m.kill()
        self.hold(0.3, 3.0)
        self.restart(ms)
        self.stop(kind, args)

    def pause_leader(self):
        """SIGSTOP the leader past several election timeouts, then SIGCONT: a
        new leader is elected meanwhile; the old one must not serve stale
        linearizable reads (or acknowledge anything) when it wakes."""
        m = self.leader()
        args = "members=%s" % m.name
        self.start("pause-leader", args)
        m.pause()
        self.hold(3 * ELECTION_MS / 1000.0, 8 * ELECTION_MS / 1000.0)
        m.resume()
        self.stop("pause-leader", args)

    def partition_leader(self):
        """The leader alone on one side (peers only: clients still reach it)."""
        lead = self.leader()
        others = [m for m in self.c if m is not lead]
        self._partition("partition-leader", [lead], others)

    def partition_split(self):
        ms = list(self.c)
        minority = self.rng.sample(ms, (len(ms) - 1) // 2)
        lead = self.c.leader()
        if lead and lead not in minority and self.rng.random() < 0.7:
            minority[0] = lead
        self._partition("partition-split", minority, [m for m in ms if m not in minority])

    def _partition(self, kind, a, b):
        args = "%s|%s" % (",".join(m.name for m in a), ",".join(m.name for m in b))
        self.start(kind, args)
        for x in a:
            for y in b:
                self.net.cut(x.slot, y.slot)
                self.net.cut(y.slot, x.slot)
        self.hold(1.5, 6.0)
        self.net.heal()
        self.stop(kind, args)

    def partition_asym(self):
        """One direction only: the leader stops hearing the others (its
        heartbeats still arrive), or the others stop hearing the leader."""
        lead = self.leader()
        others = [m for m in self.c if m is not lead]
        deaf = self.rng.random() < 0.5
        args = "%s %s %s" % (lead.name, "deaf-to" if deaf else "mute-to", ",".join(m.name for m in others))
        self.start("partition-asym", args)
        for o in others:
            if deaf:
                self.net.drop_from(lead.slot, o.slot)
            else:
                self.net.drop_from(o.slot, lead.slot)
        self.hold(1.5, 6.0)
        self.net.heal()
        self.stop("partition-asym", args)

    def loss(self):
        p = self.rng.choice([0.05, 0.1, 0.2, 0.3])
        ms = list(self.c)
        args = "p=%.2f members=%s" % (p, ",".join(m.name for m in ms))
        self.start("loss", args)
        for m in ms:
            self.net.loss(m.slot, p)
        self.hold(2.0, 6.0)
        self.net.heal()
        self.stop("loss", args)

    def membership(self):
        """Remove a follower (it stops), then add its slot back as a new member
        with a fresh data directory and new ports, as a learner, and promote it."""
        lead = self.leader()
        old = self.follower(lead)
        if self.c.disk_slot == old.slot:
            others = [m for m in self.c.followers(lead) if m.slot != self.c.disk_slot]
            if not others:
                raise Skip("the only follower is on the small disk")
            old = self.rng.choice(others)
        if not old.id:
            raise Skip("member ID of %s unknown" % old.name)
        req = wire.pb.Request(member_remove=wire.pb.MemberRemoveRequest(id=old.id))
        r = self.c.call_any(req, timeout=5.0, members=[lead] + [m for m in self.c.up() if m is not lead])
        if not hasattr(r, "header") or wire.is_error(r):
            raise Skip("MemberRemove of %s refused: %s" % (old.name, describe(r)))
        args = "remove=%s" % old.name
        self.start("membership", args)
        old.expect_exit = True
        try:
            cluster_ns.poll(lambda: not old.running, 20, "%s stopping after its removal" % old.name)
        except TimeoutError:
            old.kill()
        old.note_exit()
        self.c.retired.append(old)
        new = cluster_ns.Member(self.c, old.slot, old.gen + 1)
        del self.c.members[old.slot]
        add = wire.pb.Request(member_add=wire.pb.MemberAddRequest(peer_urls=[new.peer_url], is_learner=True))
        deadline = time.monotonic() + 30
        added, why = None, "no attempt"
        while time.monotonic() < deadline:
            r = self.c.call_any(add, timeout=5.0)
            if hasattr(r, "header") and not wire.is_error(r):
                added = r.member_add.member.id
                break
            why = describe(r)
            time.sleep(0.3)
        if added is None:
            # Leave the slot empty rather than guess: the run goes on with n-1 members.
            self.stop("membership", args + " add=failed")
            raise Skip("MemberAdd for %s (%s) kept failing: %s" % (new.name, new.peer_url, why))
        new.state = "existing"
        self.c.members[old.slot] = new
        new.initial_cluster = self.c.initial_cluster()
        new.start()
        promote = wire.pb.Request(member_promote=wire.pb.MemberPromoteRequest(id=added))
        promoted = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = self.c.call_any(promote, timeout=5.0, members=[m for m in self.c.up() if m is not new])
            if hasattr(r, "header") and not wire.is_error(r):
                promoted = True
                break
            time.sleep(0.3)
        args += " add=%s promoted=%s" % (new.name, "yes" if promoted else "no")
        self.stop("membership", args)
        self.h.membership_changed(new)

    def disk_full(self):
        """Fill the small tmpfs under one member's data directory, hold, free it."""
        slot = self.c.disk_slot
        if not slot:
            raise Skip("no member on a small disk (the run has no disk-full fault)")
        m = self.c.members[slot]
        path = self.c.slot_path(slot, os.path.join(self.c.slot_dir(slot), "filler"))
        args = "member=%s" % m.name
        self.start("disk-full", args)
        written = 0
        try:
            with open(path, "wb") as f:
                chunk = b"\0" * (1 << 20)
                for _ in range(4096):  # bounded: the tmpfs is far smaller than 4 GiB
                    try:
                        f.write(chunk)
                        f.flush()
                        written += len(chunk)
                    except OSError:
                        break
        except OSError:
            pass
        m.expect_exit = True  # a member may stop on a full disk; that is not a crash
        self.hold(2.0, 6.0)
        try:
            os.unlink(path)
        except OSError:
            pass
        self.disarm_alarms()
        m.note_exit()
        if not m.running:
            m.start()
        self.stop("disk-full", args + " filled=%dMiB" % (written >> 20))

    def disarm_alarms(self):
        req = wire.pb.Request(alarm=wire.pb.AlarmRequest(action=wire.pb.AlarmRequest.DEACTIVATE))
        try:
            self.c.call_any(req, timeout=3.0)
        except Exception:  # best effort: the heal at the end tries again
            pass

    def torn_wal(self):
        """kill -9 a member under load, then make its newest WAL segment end in
        half a record (what a crash in the middle of a write leaves), and restart it."""
        lead = self.c.leader()
        m = lead if lead and self.rng.random() < 0.5 else self.rng.choice(list(self.c))
        args = "member=%s" % m.name
        self.start("torn-wal", args)
        m.kill()
        torn = tear_wal_tail(self.h.tool("cairn-wal"), self.c.slot_path(m.slot, os.path.join(m.data_dir, "member", "wal")))
        self.hold(0.2, 1.0)
        self.restart([m])
        self.stop("torn-wal", args + " " + torn)

    def compact(self):
        """Compact below the current revision, then defragment one member."""
        sts = self.c.statuses()
        if not sts:
            raise Skip("no member answers")
        rev = max(st.header.revision for st in sts.values())
        target = rev - self.rng.randint(5, 200)
        ms = [self.c.members[s] for s in sts]
        done = "none"
        if target > 1:
            req = wire.pb.Request(compact=wire.pb.CompactionRequest(revision=target, physical=True))
            r = self.c.call_any(req, timeout=5.0, members=ms, ok_errors=("COMPACTED",))
            done = "ok" if hasattr(r, "header") and not wire.is_error(r) else describe(r)
        m = self.rng.choice(ms)
        args = "revision=%d result=%s defrag=%s" % (target, done, m.name)
        self.start("compact", args)
        try:
            r = m.call(wire.pb.Request(defragment=wire.pb.DefragmentRequest()), timeout=10.0)
            res = "ok" if not wire.is_error(r) else describe(r)
        except (OSError, wire.WireError) as e:
            res = "error:%s" % type(e).__name__
        self.hold(0.2, 1.0)
        self.stop("compact", args + " defrag_result=" + res)

    def run(self, kind):
        fn = getattr(self, kind.replace("-", "_"))
        try:
            fn()
            return True
        except Skip as e:
            self.skipped.setdefault(kind, []).append(str(e))
            return False


def describe(r):
    if r is None:
        return "no answer"
    if isinstance(r, Exception):
        return "%s: %s" % (type(r).__name__, r)
    if wire.is_error(r):
        return "%s %s" % (wire.error_name(r.error.code), r.error.message)
    return "ok"


def tear_wal_tail(cairn_wal, wal_dir):
    """Write the first half of the newest segment's last record again after
    it, where the preallocated zeros begin: a record cut by a crash.  Returns
    a word for the fault record (what cairn-wal said of the result)."""
    try:
        segs = sorted(f for f in os.listdir(wal_dir) if f.endswith(".wal"))
    except OSError as e:
        return "torn=no(%s)" % e.strerror
    if not segs or not cairn_wal:
        return "torn=no(no-segment)"
    seg = os.path.join(wal_dir, segs[-1])
    p = subprocess.run([cairn_wal, "dump", wal_dir], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    offs, end = [], None
    for line in p.stdout.decode(errors="replace").splitlines():
        parts = line.split()
        if line.startswith("==") or len(parts) < 2 or not parts[0].isdigit():
            if "segment" in line or line.startswith("=="):
                offs, end = [], None  # a new segment's records follow
            continue
        if parts[1] == "end":
            end = int(parts[0])
        elif parts[1] in ("entry", "state", "snapshot", "crc", "metadata"):
            offs.append(int(parts[0]))
    if end is None or not offs:
        return "torn=no(unparsed)"
    last = offs[-1]
    with open(seg, "r+b") as f:
        f.seek(last)
        rec = f.read(end - last)
        if len(rec) < 8:
            return "torn=no(short)"
        f.seek(end)
        f.write(rec[: max(4, len(rec) // 2)])
        f.flush()
        os.fsync(f.fileno())
    q = subprocess.run([cairn_wal, "dump", wal_dir], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    return "torn=yes wal_dump_status=%d" % q.returncode


def schedule_kinds(faults_arg):
    """The fault kinds of --faults (comma list; 'mixed' or 'all' = every kind)."""
    kinds = []
    for k in faults_arg.split(","):
        k = k.strip()
        if k in ("mixed", "all"):
            kinds += KINDS
        elif k in KINDS:
            kinds.append(k)
        elif k == "none":
            pass
        else:
            raise ValueError("unknown fault '%s' (known: %s, mixed, none)" % (k, ", ".join(KINDS)))
    return kinds


def run_schedule(h, kinds, seed, end):
    """Inject faults from kinds, one after another with quiet gaps, until end (monotonic s)."""
    sched = random.Random(seed)
    f = Faults(h, sched)
    while time.monotonic() < end - 1.0 and kinds:
        sleep_until(min(end, time.monotonic() + sched.uniform(0.5, 2.0)))
        if time.monotonic() >= end - 1.0:
            break
        kind = sched.choice(kinds)
        # Each fault draws its targets and times from its own generator, so the
        # sequence of kinds and gaps depends on the seed alone, whatever the cluster did.
        f.rng = random.Random(sched.getrandbits(64))
        f.run(kind)
        h.recover(bounded=20)
    return f
