/*
 * cairn-check: judge a cairn-history 1 file (test/jepsen/HISTORY.md) and
 * print the summary and each check's verdict (docs/reliability-checker.md).
 * Exit 0 valid, 1 a violation, 2 malformed file, 3 inconclusive (search
 * budget) with nothing else wrong, 4 usage, I/O or memory error.
 * --generate writes a valid history from a simulated store instead.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/jepsen/check.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cairn-check [--json] [--budget STATES] [--budget-seconds S] [--max-findings N]\n"
            "                   [--no-shrink] HISTORY\n"
            "       cairn-check --generate [--ops N] [--keys N] [--procs N] [--seed N] [--info-pct N]\n"
            "                   [--group N] [--no-leases] [--no-watches] OUT\n"
            "exit: 0 valid, 1 violation, 2 malformed history, 3 inconclusive (budget), 4 usage or I/O error\n");
}

/* A whole non-negative number, or -1. */
static long long num(const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    return errno || end == s || *end || v < 0 ? -1 : v;
}

int main(int argc, char **argv)
{
    struct check_opts o;
    check_opts_default(&o);
    struct check_gen g;
    check_gen_default(&g);
    bool json = false, gen = false;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool hasval = i + 1 < argc;
        long long v = hasval ? num(argv[i + 1]) : -1;
        if (strcmp(a, "--json") == 0)
            json = true;
        else if (strcmp(a, "--no-shrink") == 0)
            o.shrink = false;
        else if (strcmp(a, "--generate") == 0)
            gen = true;
        else if (strcmp(a, "--no-leases") == 0)
            g.leases = false;
        else if (strcmp(a, "--no-watches") == 0)
            g.watches = false;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (a[0] == '-' && a[1] == '-') {
            if (v < 0) {
                fprintf(stderr, "cairn-check: %s needs a non-negative number\n", a);
                return 4;
            }
            i++;
            if (strcmp(a, "--budget") == 0 && v > 0)
                o.budget = (uint64_t)v;
            else if (strcmp(a, "--budget-seconds") == 0 && v > 0)
                o.budget_seconds = (double)v;
            else if (strcmp(a, "--max-findings") == 0)
                o.max_findings = (size_t)v;
            else if (strcmp(a, "--ops") == 0)
                g.nops = (size_t)v;
            else if (strcmp(a, "--keys") == 0 && v > 0)
                g.nkeys = (size_t)v;
            else if (strcmp(a, "--procs") == 0 && v > 0 && v < 100000)
                g.nprocs = (unsigned)v;
            else if (strcmp(a, "--seed") == 0)
                g.seed = (uint64_t)v;
            else if (strcmp(a, "--info-pct") == 0 && v <= 100)
                g.info_pct = (unsigned)v;
            else if (strcmp(a, "--group") == 0)
                g.group = (unsigned)v;
            else {
                fprintf(stderr, "cairn-check: unknown option or bad value: %s %s\n", a, argv[i]);
                usage(stderr);
                return 4;
            }
        } else if (!path)
            path = a;
        else {
            fprintf(stderr, "cairn-check: more than one file named (%s, %s)\n", path, a);
            return 4;
        }
    }
    if (!path) {
        usage(stderr);
        return 4;
    }
    if (gen) {
        FILE *f = fopen(path, "w");
        if (!f) {
            fprintf(stderr, "cairn-check: %s: %s\n", path, strerror(errno));
            return 4;
        }
        int rc = check_generate(f, &g);
        if (fclose(f) != 0 && rc == 0)
            rc = -EIO;
        if (rc < 0) {
            fprintf(stderr, "cairn-check: writing %s: %s\n", path, strerror(-rc));
            return 4;
        }
        return 0;
    }
    char err[1024];
    struct history *h = NULL;
    int rc = hist_parse_file(path, &h, err, sizeof(err));
    if (rc < 0) {
        if (json) {
            printf("{\"valid\":false,\"exit\":%d,\"error\":\"", rc == -EINVAL ? 2 : 4);
            for (const char *c = err; *c; c++)
                printf(*c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
            printf("\"}\n");
        }
        fprintf(stderr, "cairn-check: %s\n", err);
        return rc == -EINVAL ? 2 : 4;
    }
    struct check_report rep;
    rc = check_history(h, &o, &rep);
    if (rc < 0) {
        fprintf(stderr, "cairn-check: %s: checking stopped: %s\n", path, strerror(-rc));
        check_report_free(&rep);
        hist_free(h);
        return 4;
    }
    if (json)
        check_print_json(stdout, h, &rep);
    else {
        printf("history: %s\n", path);
        const char *seed = hist_meta_get(h, "seed");
        if (seed)
            printf("seed: %s\n", seed);
        check_print_text(stdout, h, &rep);
    }
    int code = check_exit_code(&rep);
    check_report_free(&rep);
    hist_free(h);
    return code;
}
