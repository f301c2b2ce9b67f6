/*
 * Socket activation under nng 1.5, which has no way to adopt a listening
 * descriptor.  nng's TCP and IPC listeners do: socket(), add the fd to their
 * epoll set, set O_NONBLOCK, bind(), listen().  This file defines bind(),
 * epoll_ctl(), listen() and unlink() for the whole process (the executable's
 * definitions win over libc's for libnng.so, which references them):
 *
 *  - epoll_ctl() remembers each EPOLL_CTL_ADD (epoll fd and event data);
 *  - bind() on exactly the address of a socket systemd passed us instead
 *    dup3()s the inherited socket over nng's fd, makes it non-blocking and
 *    re-adds it to the remembered epoll set (the kernel dropped nng's
 *    original from the set when dup3 closed it), then reports success;
 *  - listen() on an inherited socket is a no-op, keeping the unit's Backlog=;
 *  - shutdown() of an inherited socket is a no-op: nng shuts a listener down
 *    before closing it, and on Linux that takes the socket out of LISTEN for
 *    every holder, systemd's copy included, so the unit would be dead after
 *    the first clean stop;
 *  - unlink() of an inherited ipc socket's path is a no-op: nng unlinks its
 *    ipc path when the listener closes, which would break the socket unit
 *    for every later start.
 * The inherited descriptors stay open, so a listener that is closed and
 * started again (on reload) adopts the same socket again and connections
 * that queue meanwhile are kept.  Everything here depends on nng 1.5's
 * internals; test/unit/test_activation.c proves it against the real library.
 */
#include "daemon/activation.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "base/errors.h"

#define MAX_INHERITED 16
#define MAX_TRACKED_FDS 65536 /* epoll registrations are remembered for fds below this */

static struct activation_socket inherited[MAX_INHERITED];
static size_t n_inherited;

/* The inherited sockets' identities: an fd is one of them whatever its number. */
static struct stat inherited_st[MAX_INHERITED];

/* Remembered EPOLL_CTL_ADDs, only while there are inherited sockets. */
struct epoll_reg {
    int epfd; /* 0 = none */
    struct epoll_event ev;
};
static struct epoll_reg *regs;
static pthread_mutex_t regs_lock = PTHREAD_MUTEX_INITIALIZER;

static int (*real_bind)(int, const struct sockaddr *, socklen_t);
static int (*real_epoll_ctl)(int, int, int, struct epoll_event *);
static int (*real_listen)(int, int);
static int (*real_shutdown)(int, int);
static int (*real_unlink)(const char *);
static pthread_once_t real_once = PTHREAD_ONCE_INIT;

static void find_real(void)
{
    real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    real_epoll_ctl = (int (*)(int, int, int, struct epoll_event *))dlsym(RTLD_NEXT, "epoll_ctl");
    real_listen = (int (*)(int, int))dlsym(RTLD_NEXT, "listen");
    real_shutdown = (int (*)(int, int))dlsym(RTLD_NEXT, "shutdown");
    real_unlink = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
    if (!real_bind || !real_epoll_ctl || !real_listen || !real_shutdown || !real_unlink)
        abort(); /* libc without these cannot run anything */
}

static void describe(const struct sockaddr_storage *ss, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, len, "%s:%u", host, ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, len, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else if (ss->ss_family == AF_UNIX) {
        snprintf(out, len, "%s", ((const struct sockaddr_un *)ss)->sun_path);
    } else {
        snprintf(out, len, "(address family %d)", ss->ss_family);
    }
}

/* Same family, address and port (or path): the exact match bind() needs. */
static int same_address(const struct sockaddr_storage *a, const struct sockaddr *b, socklen_t blen)
{
    if (a->ss_family != b->sa_family)
        return 0;
    switch (b->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return blen >= sizeof *y && x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return blen >= sizeof *y && x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0 &&
               x->sin6_scope_id == y->sin6_scope_id;
    }
    case AF_UNIX: {
        const struct sockaddr_un *x = (const void *)a, *y = (const void *)b;
        size_t n = blen > offsetof(struct sockaddr_un, sun_path) ? blen - offsetof(struct sockaddr_un, sun_path) : 0;
        if (n > sizeof y->sun_path)
            n = sizeof y->sun_path;
        return x->sun_path[0] && strncmp(x->sun_path, y->sun_path, n) == 0 && strlen(x->sun_path) == strnlen(y->sun_path, n);
    }
    }
    return 0;
}

int activation_init(char *err, size_t len)
{
    char **names = NULL;
    int n, rc = 0;

    pthread_once(&real_once, find_real);
    n = sd_listen_fds_with_names(1 /* unset LISTEN_* */, &names);
    if (n < 0) {
        snprintf(err, len, "cannot read the sockets systemd passed: %s", strerror(-n));
        return -CAIRN_E_CONFIG;
    }
    if (n > MAX_INHERITED) {
        snprintf(err, len, "systemd passed %d sockets; at most %d are supported", n, MAX_INHERITED);
        rc = -CAIRN_E_CONFIG;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        struct activation_socket *s = &inherited[i];
        int fd = SD_LISTEN_FDS_START + i;
        s->fd = fd;
        snprintf(s->name, sizeof s->name, "%s", names && names[i] ? names[i] : "unknown");
        s->addrlen = sizeof s->addr;
        if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0 ||
            getsockname(fd, (struct sockaddr *)&s->addr, &s->addrlen) < 0 ||
            (s->addr.ss_family != AF_INET && s->addr.ss_family != AF_INET6 && s->addr.ss_family != AF_UNIX)) {
            snprintf(err, len,
                     "socket '%s' passed by systemd (fd %d) is not a listening TCP or unix stream socket; "
                     "check ListenStream= in the socket unit",
                     s->name, fd);
            rc = -CAIRN_E_CONFIG;
            goto out;
        }
        describe(&s->addr, s->desc, sizeof s->desc);
        fstat(fd, &inherited_st[i]);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    if (n > 0 && !(regs = calloc(MAX_TRACKED_FDS, sizeof *regs))) {
        snprintf(err, len, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    n_inherited = (size_t)n;
    rc = n;
out:
    if (names)
        for (int i = 0; i < n; i++)
            free(names[i]);
    free(names);
    return rc;
}

size_t activation_count(void)
{
    return n_inherited;
}

const struct activation_socket *activation_get(size_t i)
{
    return i < n_inherited ? &inherited[i] : NULL;
}

int activation_url_matches(const struct activation_socket *s, const char *url)
{
    const char *rest;
    if (!strncmp(url, "ipc://", 6)) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof sun.sun_path, "%s", url + 6);
        return same_address(&s->addr, (struct sockaddr *)&sun, sizeof sun);
    }
    if (!strncmp(url, "tcp://", 6))
        rest = url + 6;
    else if (!strncmp(url, "tls+tcp://", 10))
        rest = url + 10;
    else
        return 0;
    char host[256];
    const char *colon = strrchr(rest, ':');
    if (!colon || (size_t)(colon - rest) >= sizeof host)
        return 0;
    const char *h = rest;
    size_t hlen = (size_t)(colon - rest);
    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *res = NULL;
    if (getaddrinfo(hlen ? host : NULL, colon + 1, &hints, &res) != 0)
        return 0;
    int match = 0;
    for (struct addrinfo *ai = res; ai && !match; ai = ai->ai_next)
        match = same_address(&s->addr, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(res);
    return match;
}

size_t activation_describe_unadopted(char *buf, size_t len)
{
    size_t count = 0, off = 0;
    if (len)
        buf[0] = '\0';
    for (size_t i = 0; i < n_inherited; i++) {
        if (inherited[i].adopted)
            continue;
        if (off < len)
            off += (size_t)snprintf(buf + off, len - off, "%s%s %s", count ? ", " : "", inherited[i].name,
                                    inherited[i].desc);
        count++;
    }
    return count;
}

/* ---------------------------------------------------------------- interposed calls */

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    pthread_once(&real_once, find_real);
    int rc = real_epoll_ctl(epfd, op, fd, ev);
    /* EPOLL_CTL_MOD (nng re-arms on every event) goes straight through. */
    if (rc == 0 && regs && fd >= 0 && fd < MAX_TRACKED_FDS && (op == EPOLL_CTL_ADD || op == EPOLL_CTL_DEL)) {
        pthread_mutex_lock(&regs_lock);
        if (op == EPOLL_CTL_ADD) {
            regs[fd].epfd = epfd;
            regs[fd].ev = ev ? *ev : (struct epoll_event){0};
        } else {
            regs[fd].epfd = 0;
        }
        pthread_mutex_unlock(&regs_lock);
    }
    return rc;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    pthread_once(&real_once, find_real);
    if (!regs || !addr || fd < 0 || fd >= MAX_TRACKED_FDS)
        return real_bind(fd, addr, len);
    for (size_t i = 0; i < n_inherited; i++) {
        struct activation_socket *s = &inherited[i];
        if (!same_address(&s->addr, addr, len))
            continue;
        pthread_mutex_lock(&regs_lock);
        struct epoll_reg reg = regs[fd];
        if (dup3(s->fd, fd, O_CLOEXEC) < 0) {
            int e = errno;
            pthread_mutex_unlock(&regs_lock);
            errno = e;
            return -1;
        }
        int fl = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        if (reg.epfd && real_epoll_ctl(reg.epfd, EPOLL_CTL_ADD, fd, &reg.ev) < 0) {
            int e = errno;
            pthread_mutex_unlock(&regs_lock);
            errno = e;
            return -1;
        }
        s->adopted = 1;
        pthread_mutex_unlock(&regs_lock);
        return 0;
    }
    return real_bind(fd, addr, len);
}

/* Nonzero if fd refers to one of the sockets systemd passed us. */
static int is_inherited(int fd)
{
    struct stat st;
    if (n_inherited == 0 || fstat(fd, &st) < 0)
        return 0;
    for (size_t i = 0; i < n_inherited; i++)
        if (st.st_dev == inherited_st[i].st_dev && st.st_ino == inherited_st[i].st_ino)
            return 1;
    return 0;
}

int listen(int fd, int backlog)
{
    pthread_once(&real_once, find_real);
    if (is_inherited(fd))
        return 0; /* already listening, with the unit's Backlog= */
    return real_listen(fd, backlog);
}

int shutdown(int fd, int how)
{
    pthread_once(&real_once, find_real);
    if (is_inherited(fd))
        return 0; /* would stop systemd's copy listening too */
    return real_shutdown(fd, how);
}

int unlink(const char *path)
{
    pthread_once(&real_once, find_real);
    for (size_t i = 0; i < n_inherited; i++)
        if (inherited[i].addr.ss_family == AF_UNIX &&
            strcmp(((struct sockaddr_un *)&inherited[i].addr)->sun_path, path) == 0)
            return 0; /* systemd owns this socket file */
    return real_unlink(path);
}
