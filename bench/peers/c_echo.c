/*
 * c_echo: a minimal C epoll echo server, the benchmark's physical limit on this machine.
 *
 *   c_echo [PORT]      (PORT 0, the default, picks a free one)
 *
 * Binds 127.0.0.1 only.  First line on stdout: "listening on 127.0.0.1:PORT".
 * Level-triggered epoll, one recv of up to 64 KiB per readiness event, then the
 * bytes are written back before the next event.
 *
 * Shortcut, named: accepted sockets stay blocking, so a send blocks until the
 * kernel takes everything.  That is fine for the benchmark's clients, which
 * always read, and wrong for a real server (a client that never reads would
 * stop everyone: Comer's server deadlock).  It is what makes this the floor:
 * no output buffering, no interest changes, no bookkeeping per connection.
 * SIGTERM ends it (the default action).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0, one = 1;
    if (port < 0 || port > 65535) { fprintf(stderr, "c_echo: bad port %s\n", argv[1]); return 2; }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((unsigned short)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 1024) < 0) {
        fprintf(stderr, "c_echo: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
        return 1;
    }
    socklen_t len = sizeof sa;
    getsockname(ls, (struct sockaddr *)&sa, &len);
    printf("listening on 127.0.0.1:%d\n", ntohs(sa.sin_port));
    fflush(stdout);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = ls }, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    static char buf[65536];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno != EINTR) { perror("c_echo: epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0) continue;  /* EMFILE and friends: the client waits in the backlog */
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                ev.events = EPOLLIN;
                ev.data.fd = c;
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                continue;
            }
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r <= 0) { close(fd); continue; }  /* EOF or reset: closing also unregisters */
            for (ssize_t off = 0; off < r;) {
                ssize_t w = send(fd, buf + off, (size_t)(r - off), MSG_NOSIGNAL);
                if (w <= 0) { if (w < 0 && errno == EINTR) continue; break; }
                off += w;
            }
        }
    }
}
