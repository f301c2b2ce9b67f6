/*
 * Tab completion for readline: meta-commands at the start of a line, key
 * prefixes inside a quoted string (asked of the cluster, one path segment at
 * a time), otherwise SQL keywords, table, column and function names.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <readline/readline.h>

#include "shell/shell.h"

#define KEY_CANDIDATES 200 /* keys fetched to complete a prefix */

static struct shell *the_shell;
static char **cands;
static size_t ncands, capcands, next_cand;

static void cands_clear(void)
{
    for (size_t i = 0; i < ncands; i++)
        free(cands[i]);
    ncands = next_cand = 0;
}

static void cand_add(const char *s, size_t n)
{
    for (size_t i = 0; i < ncands; i++)
        if (strlen(cands[i]) == n && !memcmp(cands[i], s, n))
            return;
    if (ncands == capcands) {
        size_t cap = capcands ? capcands * 2 : 64;
        char **c = realloc(cands, cap * sizeof *c);
        if (!c)
            return;
        cands = c;
        capcands = cap;
    }
    char *d = malloc(n + 1);
    if (!d)
        return;
    memcpy(d, s, n);
    d[n] = '\0';
    cands[ncands++] = d;
}

static char *generator(const char *text, int state)
{
    (void)text;
    if (!state)
        next_cand = 0;
    return next_cand < ncands ? strdup(cands[next_cand++]) : NULL;
}

static bool starts(const char *s, const char *prefix, size_t n)
{
    return strncasecmp(s, prefix, n) == 0;
}

/* words: cased like what was typed so far */
static void add_word(const char *w, const char *text, size_t n)
{
    if (!starts(w, text, n))
        return;
    bool lower = n && islower((unsigned char)text[0]);
    char buf[128];
    size_t len = strlen(w);
    if (len >= sizeof buf)
        return;
    for (size_t i = 0; i <= len; i++)
        buf[i] = lower ? (char)tolower((unsigned char)w[i]) : w[i];
    if (n)
        memcpy(buf, text, n); /* keep what was typed as typed */
    cand_add(buf, len);
}

static void sql_words(const char *text)
{
    size_t n = strlen(text);
    static const char *const extra[] = {"compact", "defragment", "snapshot_save", "move_leader",
                                        "keepalive", "printable", "base64", "unbase64", "unhex",
                                        "prefix_end", "last_commit_revision", "as_of", NULL};
    for (size_t i = 0; engine_tables[i]; i++)
        if (starts(engine_tables[i], text, n))
            cand_add(engine_tables[i], strlen(engine_tables[i]));
    for (size_t i = 0; extra[i]; i++)
        if (starts(extra[i], text, n))
            cand_add(extra[i], strlen(extra[i]));
    sqlite3_stmt *st;
    if (the_shell->db &&
        sqlite3_prepare_v2(the_shell->db,
                           "SELECT DISTINCT p.name FROM sqlite_temp_schema s, pragma_table_info(s.name) p "
                           "WHERE s.type = 'table' UNION SELECT name FROM sqlite_schema WHERE type='table'",
                           -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *c = (const char *)sqlite3_column_text(st, 0);
            if (c && starts(c, text, n))
                cand_add(c, strlen(c));
        }
        sqlite3_finalize(st);
    }
    for (int i = 0; i < sqlite3_keyword_count(); i++) {
        const char *kw;
        int len;
        char buf[64];
        if (sqlite3_keyword_name(i, &kw, &len) != SQLITE_OK || len >= (int)sizeof buf)
            continue;
        memcpy(buf, kw, (size_t)len);
        buf[len] = '\0';
        add_word(buf, text, n);
    }
}

/* key_prefixes: keys under text, each cut after its next '/'. */
static void key_prefixes(const char *text)
{
    size_t n = strlen(text);
    static const uint8_t zero[1] = {0};
    uint8_t *end = malloc(n + 1);
    size_t elen = end && n ? prefix_end((const uint8_t *)text, n, end) : 0;
    Cairn__RangeRequest rr = CAIRN__RANGE_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__Response *resp = NULL;
    struct cairn_error_detail err;
    struct cairn_call_opts o = {.timeout_ms = 2000};
    rr.key.data = n ? (uint8_t *)text : (uint8_t *)zero;
    rr.key.len = n ? n : 1;
    rr.range_end.data = elen ? end : (uint8_t *)zero;
    rr.range_end.len = elen ? elen : 1;
    rr.keys_only = true;
    rr.limit = KEY_CANDIDATES;
    rr.serializable = true;
    req.body_case = CAIRN__REQUEST__BODY_RANGE;
    req.range = &rr;
    if (shell_call_expect(the_shell, &req, CAIRN__RESPONSE__BODY_RANGE, &o, false, &resp, &err) == 0) {
        bool open_ended = false;
        for (size_t i = 0; i < resp->range->n_kvs; i++) {
            const ProtobufCBinaryData *k = &resp->range->kvs[i]->key;
            if (!bytes_utf8(k->data, k->len) || k->len < n)
                continue;
            const uint8_t *slash = memchr(k->data + n, '/', k->len - n);
            size_t cutlen = slash ? (size_t)(slash - k->data) + 1 : k->len;
            open_ended |= slash != NULL;
            cand_add((const char *)k->data, cutlen);
        }
        /* a path segment: the key goes on, so leave the quote open */
        if (open_ended && ncands == 1) {
            rl_completion_suppress_quote = 1;
            rl_completion_append_character = '\0';
        }
    }
    cairn_response_free(resp);
    free(end);
}

static char **complete(const char *text, int start, int end)
{
    (void)end;
    cands_clear();
    rl_attempted_completion_over = 1; /* never file names */
    rl_completion_append_character = ' ';
    int i = 0;
    while (i < start && isspace((unsigned char)rl_line_buffer[i]))
        i++;
    if (rl_completion_quote_character == '\'' || rl_completion_quote_character == '"') {
        key_prefixes(text);
    } else if (i == start && text[0] == '\\') {
        for (size_t k = 0; meta_commands[k]; k++)
            if (!strncmp(meta_commands[k], text, strlen(text)))
                cand_add(meta_commands[k], strlen(meta_commands[k]));
    } else {
        sql_words(text);
    }
    if (!ncands)
        return NULL;
    return rl_completion_matches(text, generator);
}

void complete_init(struct shell *sh)
{
    the_shell = sh;
    rl_readline_name = "cairn";
    rl_attempted_completion_function = complete;
    static char breaks[] = " \t\n(),;=<>+-*|";
    rl_completer_quote_characters = "'\"";
    rl_completer_word_break_characters = breaks;
    rl_basic_word_break_characters = breaks;
}
