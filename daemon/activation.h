/*
 * Socket activation for nng 1.5, which cannot adopt a listening descriptor.
 * activation.c interposes bind(), epoll_ctl() and unlink() for the whole
 * process: when nng binds an address that systemd already passed us a
 * listening socket for, the inherited socket takes the place of nng's own.
 * How and why is explained at the top of activation.c.
 */
#ifndef CAIRN_DAEMON_ACTIVATION_H
#define CAIRN_DAEMON_ACTIVATION_H

#include <stddef.h>
#include <sys/socket.h>

struct activation_socket {
    int fd;                       /* the inherited descriptor (3, 4, ...) */
    char name[64];                /* FileDescriptorName=, or "unknown" */
    struct sockaddr_storage addr; /* what it is bound to */
    socklen_t addrlen;
    int adopted;                  /* nng has bound this address and now uses the socket */
    char desc[160];               /* "127.0.0.1:2479", "[::1]:2480" or the socket path, for messages */
};

/*
 * activation_init: take the sockets systemd passed (LISTEN_FDS, LISTEN_PID,
 * LISTEN_FDNAMES) and unset those variables so children do not inherit them.
 * Each must be a listening stream socket (AF_INET, AF_INET6 or AF_UNIX).
 * Returns how many were passed (0 when not socket-activated), or
 * -CAIRN_E_CONFIG with a message in err.  Call once, before any listener
 * is started.
 */
int activation_init(char *err, size_t err_len);

/* activation_count / activation_get: the inherited sockets, in fd order. */
size_t activation_count(void);
const struct activation_socket *activation_get(size_t i);

/*
 * activation_url_matches: nonzero if inherited socket s is bound to exactly
 * the address of url (tcp://IP:port, tls+tcp://IP:port with a numeric address
 * or "localhost", or ipc:///path).  This is the comparison bind() will make.
 */
int activation_url_matches(const struct activation_socket *s, const char *url);

/*
 * activation_describe_unadopted: after every listener has started, lists in
 * buf the inherited sockets no listener took ("client 127.0.0.1:9999, ...").
 * Returns how many there are.
 */
size_t activation_describe_unadopted(char *buf, size_t len);

#endif
