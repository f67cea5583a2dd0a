/*
 * loadgen: the benchmark's epoll TCP load generator (loopback only).
 *
 * Compiled at run time by bench/build.py (like wrk, a C client, because a
 * Python client cannot drive a fast server on two cores).  One process, one
 * epoll loop, non-blocking sockets, TCP_NODELAY.
 *
 *   loadgen pingpong -p PORT [-c CONNS] [-i IDLE] [-s SIZE] [-d SECS] [-w SECS] [-M]
 *   loadgen churn    -p PORT [-c SLOTS]           [-s SIZE] [-d SECS] [-w SECS] [-M]
 *
 * pingpong: first opens IDLE connections, each confirmed by one 1-byte echo
 *   and then left alone; prints "MARK idle_ready" on stderr and waits for one
 *   line on stdin (the driver measures the server's memory meanwhile).  Then
 *   CONNS connections each do strict ping-pong: send SIZE bytes, wait until
 *   exactly SIZE bytes came back, check them, send the next message.  Message
 *   k is bytes (j + k) mod 256, j = 0..SIZE-1: every byte value, shifted by
 *   one per message, so a lost, repeated or reordered byte is caught.
 * churn: SLOTS connections at a time each connect, send SIZE bytes, check the
 *   echo, close, and start again.  One request = one whole connection.
 *
 * Source addresses are spread over 127.0.0.2 .. 127.0.0.251 (with
 * IP_BIND_ADDRESS_NO_PORT, so the port is picked per 4-tuple at connect) so
 * that 10,000 idle connections or a long churn never run out of ports.
 *
 * Ping-pong measures a steady state: its warm-up starts once every connection
 * has had one echo back (or -T seconds have passed); "ready_s" says how long
 * that took, and "ready_timeout" is 1 if -T ran out first.  Counted: requests sent and
 * completed in the measured window (after WARMUP seconds),
 * their latency (1 us buckets up to 1 s), and this process's CPU time in the
 * window.  "errors" are broken echoes (a byte wrong, too many bytes): they must
 * be zero.  "failures" are connections that could not connect in time, were
 * reset or closed early.  "stalled" are ping-pong connections still waiting
 * for an echo after more than a second at the end (a lost byte, or a server
 * that stopped answering them); "idle_lost" are idle connections that the
 * server closed or sent something on.  "busy" are clients the server turned
 * away: the first thing a connection read was "busy\n" (what a server at its
 * capacity says before it closes; servers/service.py's BUSY_MESSAGE), then
 * the close.  An echo's first byte is 0 ("busy" starts with 'b'), so such a
 * reply is no echo at all: it is counted apart, not as a broken echo, and
 * the connection is gone.  -M prints "MARK warm_end" and "MARK end" on stderr
 * at the window's edges, so the driver can sample the server's CPU there, and
 * after each waits (at most EDGE_WAIT_S) for a line on stdin: the load stops
 * while the driver reads.  With a thousand busy server processes on the same
 * cores, a driver reading them under load gets a thousandth of a core and
 * takes much of the window to do it; with the load stopped it reads them at
 * once.  The window starts when the driver says go, and after its end
 * nothing is closed until the driver has read, so that what a server does
 * about the closes (a fork server's children exiting) is not read as work
 * done in the window.
 *
 * Bounded: each connect has -T seconds (default 10), and so has the wait for
 * every first echo; the idle wait on stdin 120 s; the run ends at most
 * -T + WARMUP + SECS after it starts, whatever the server does.  Only
 * addresses in 127.0.0.0/8 are accepted.  Prints one JSON line on stdout.
 */
#define _GNU_SOURCE   /* POLLRDHUP, IP_BIND_ADDRESS_NO_PORT */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define HIST_US 1000000     /* 1 us buckets up to 1 s */
#define MAX_CONNS 60000
#define IN_FLIGHT 512       /* idle connections being opened at once */
#define IDLE_WAIT_S 120     /* how long the driver may take to measure */
#define EDGE_WAIT_S 5       /* ... and to read the server's CPU at the window's edges */
#define SRC_FIRST 2         /* source addresses 127.0.0.2 .. */
#define SRC_COUNT 250       /* .. 127.0.0.251 */

/* What a server at its capacity answers before it closes (servers/service.py). */
static const char BUSY[] = "busy\n";
#define BUSY_LEN (sizeof BUSY - 1)

enum { ST_FREE, ST_CONNECTING, ST_ACTIVE, ST_IDLE, ST_DEAD };

struct conn {
    int fd;
    int state;
    uint64_t k;       /* message number on this connection */
    size_t size;      /* bytes in the current message */
    size_t sent, recvd;
    int want_out;
    int served;       /* completed a request inside the window */
    int confirmed;    /* completed its first request */
    size_t busy;      /* bytes of BUSY read in place of the first echo */
    double t_start, t_connect;
};

static size_t msgsize = 1024;
static unsigned char *pat, *rbuf;
static int epfd, marks;
static struct sockaddr_in server;
static uint32_t *hist;
static uint64_t hist_over, requests, errors, failures, turned_away, bytes_checked, src_next;
static double warm_end, t_end, connect_timeout = 10.0;
static int established;   /* connects that succeeded in the main phase */
static int lost_unconfirmed; /* connections that failed before their first echo */

static void mark(const char *what) {
    if (!marks) return;
    fprintf(stderr, "MARK %s\n", what);
    fflush(stderr);
}

/* -M: wait (at most EDGE_WAIT_S) for the driver's line on stdin after a mark. */
static void wait_driver(void) {
    struct pollfd p = { .fd = 0, .events = POLLIN };
    if (poll(&p, 1, EDGE_WAIT_S * 1000) > 0) {
        char line[64];
        if (read(0, line, sizeof line) < 0) perror("loadgen: read stdin");
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static void ctl(struct conn *c, int op, uint32_t events) {
    struct epoll_event ev = { .events = events, .data.ptr = c };
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0 && op != EPOLL_CTL_DEL) perror("loadgen: epoll_ctl");
}

static void set_out(struct conn *c, int out) {
    if (c->want_out == out) return;
    ctl(c, EPOLL_CTL_MOD, EPOLLIN | (out ? EPOLLOUT : 0));
    c->want_out = out;
}

static void drop(struct conn *c) {
    ctl(c, EPOLL_CTL_DEL, 0);
    close(c->fd);
    c->fd = -1;
}

/* A connection that broke: counted, closed, and (in churn) replaced. */
static void fail(struct conn *c, int data_error, const char *why) {
    if (data_error) errors++; else failures++;
    if (!c->confirmed) lost_unconfirmed++;
    if (errors + failures <= 10)
        fprintf(stderr, "loadgen: connection failed: %s (message %llu, sent %zu, received %zu)\n",
                why, (unsigned long long)c->k, c->sent, c->recvd);
    drop(c);
    c->state = ST_DEAD;
}

/* The server answered "busy" and closed: a client turned away, not a broken echo. */
static void turn_away(struct conn *c) {
    if (++turned_away == 1)
        fprintf(stderr, "loadgen: the server answered busy (at its capacity) and closed; "
                        "counted as turned away, not as a broken echo\n");
    if (!c->confirmed) lost_unconfirmed++;
    drop(c);
    c->state = ST_DEAD;
}

/* Start a non-blocking connect from the next 127.0.0.x source address. */
static int open_conn(struct conn *c, double t) {
    int one = 1;
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) { perror("loadgen: socket"); c->state = ST_DEAD; failures++; return -1; }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = { .sin_family = AF_INET };
    src.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)(SRC_FIRST + src_next++ % SRC_COUNT));
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) {
        perror("loadgen: bind"); close(c->fd); c->state = ST_DEAD; failures++; return -1;
    }
    c->t_connect = t;
    c->state = ST_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&server, sizeof server) < 0 && errno != EINPROGRESS) {
        c->want_out = 1;
        ctl(c, EPOLL_CTL_ADD, EPOLLOUT);
        fail(c, 0, strerror(errno));
        return -1;
    }
    c->want_out = 1;
    ctl(c, EPOLL_CTL_ADD, EPOLLOUT);
    return 0;
}

/* The connect finished (EPOLLOUT): 0 if it succeeded. */
static int connected(struct conn *c) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) { fail(c, 0, strerror(err)); return -1; }
    return 0;
}

static const unsigned char *msg_of(uint64_t k) { return pat + (k & 255); }

/* Send as much of the current message as the socket takes. */
static void do_send(struct conn *c) {
    const unsigned char *m = msg_of(c->k);
    while (c->sent < c->size) {
        ssize_t n = send(c->fd, m + c->sent, c->size - c->sent, MSG_NOSIGNAL);
        if (n > 0) { c->sent += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) { set_out(c, 1); return; }
        fail(c, 0, n < 0 ? strerror(errno) : "send returned 0");
        return;
    }
    set_out(c, 0);
}

static void start_msg(struct conn *c, size_t size, double t) {
    c->size = size;
    c->sent = c->recvd = 0;
    c->t_start = t;
    do_send(c);
}

static void count(struct conn *c, double t, double since) {
    /* Sent before the window started, a request waited through the driver's
       reading (-M): neither its latency nor it is the window's. */
    if (since < warm_end || t > t_end) return;
    requests++;
    c->served = 1;
    double us = (t - since) * 1e6;
    if (us < 0) us = 0;
    if (us < HIST_US) hist[(size_t)us]++; else hist_over++;
}

/* The rest of a "busy\n" reply, then the server's close (0: the connection is gone or waits). */
static int read_busy(struct conn *c) {
    char got[BUSY_LEN + 1];
    for (;;) {
        ssize_t n = recv(c->fd, got, sizeof got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (n > 0 && c->busy + (size_t)n <= BUSY_LEN &&
            memcmp(got, BUSY + c->busy, (size_t)n) == 0) {
            c->busy += (size_t)n;
            continue;
        }
        if (n > 0) fail(c, 1, "a reply that is neither the echo nor busy");
        else if (c->busy == BUSY_LEN) turn_away(c);      /* closed, or reset, after "busy\n" */
        else fail(c, 0, n < 0 ? strerror(errno) : "server closed the connection early");
        return 0;
    }
}

/* Read what the socket has of the current message; 1 when it is complete. */
static int do_recv(struct conn *c) {
    if (c->busy) return read_busy(c);
    for (;;) {
        /* Never read past the current message: a byte too many is an error. */
        size_t want = c->size - c->recvd;
        ssize_t n = recv(c->fd, rbuf, want ? want : 1, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            fail(c, 0, strerror(errno));
            return 0;
        }
        if (n == 0) { fail(c, 0, "server closed the connection early"); return 0; }
        /* Before its first echo, a connection may be turned away instead. */
        if (c->k == 0 && c->recvd == 0 && (size_t)n <= BUSY_LEN && memcmp(rbuf, BUSY, (size_t)n) == 0) {
            c->busy = (size_t)n;
            return read_busy(c);
        }
        if (c->recvd + (size_t)n > c->sent) { fail(c, 1, "more bytes came back than were sent"); return 0; }
        if (memcmp(rbuf, msg_of(c->k) + c->recvd, (size_t)n) != 0) {
            fail(c, 1, "echoed bytes differ from those sent");
            return 0;
        }
        c->recvd += (size_t)n;
        bytes_checked += (uint64_t)n;
        if (c->recvd == c->size) return 1;
    }
}

static double percentile(double q) {
    uint64_t total = requests;
    if (total == 0) return 0.0;
    uint64_t target = (uint64_t)(q * (double)total), acc = 0;
    if (target >= total) target = total - 1;
    for (size_t i = 0; i < HIST_US; i++) {
        acc += hist[i];
        if (acc > target) return (double)i + 0.5;
    }
    return (double)HIST_US;
}

/* Open n idle connections, IN_FLIGHT at a time, each confirmed by a 1-byte echo. */
static int open_idle(struct conn *conns, int n) {
    struct epoll_event evs[512];
    int next = 0, busy = 0, ready = 0;
    double deadline = now() + connect_timeout + n / 100.0;
    while (next < n || busy > 0) {
        double t = now();
        if (t > deadline) break;
        while (next < n && busy < IN_FLIGHT)
            if (open_conn(&conns[next++], t) == 0) busy++;
        int got = epoll_wait(epfd, evs, 512, 100);
        if (got < 0) { if (errno == EINTR) continue; perror("loadgen: epoll_wait"); return -1; }
        for (int i = 0; i < got; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->state == ST_CONNECTING) {
                if (connected(c) < 0) { busy--; continue; }
                c->state = ST_ACTIVE;
                set_out(c, 0);
                start_msg(c, 1, t);
                if (c->state == ST_DEAD) busy--;
            } else if (c->state == ST_ACTIVE) {
                if (do_recv(c)) {
                    ctl(c, EPOLL_CTL_DEL, 0);   /* held open, never looked at again */
                    c->state = ST_IDLE;
                    busy--;
                    ready++;
                } else if (c->state == ST_DEAD) {
                    busy--;
                }
            }
        }
    }
    for (int i = 0; i < n; i++)
        if (conns[i].state == ST_CONNECTING || conns[i].state == ST_ACTIVE)
            fail(&conns[i], 0, "idle connection not confirmed in time");
    return ready;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen pingpong|churn -p PORT [-H 127.0.0.1] [-c CONNS] [-i IDLE]\n"
            "               [-s SIZE] [-d SECS] [-w SECS] [-T CONNECT_SECS] [-M]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "pingpong") && strcmp(argv[1], "churn"))) usage();
    int churn = strcmp(argv[1], "churn") == 0;
    int port = -1, nconns = 1, nidle = 0, opt;
    double seconds = 5.0, warmup = 1.0;
    const char *host = "127.0.0.1";
    optind = 2;
    while ((opt = getopt(argc, argv, "p:H:c:i:s:d:w:T:M")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'H': host = optarg; break;
        case 'c': nconns = atoi(optarg); break;
        case 'i': nidle = atoi(optarg); break;
        case 's': msgsize = (size_t)atol(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'T': connect_timeout = atof(optarg); break;
        case 'M': marks = 1; break;
        default: usage();
        }
    }
    memset(&server, 0, sizeof server);
    server.sin_family = AF_INET;
    if (inet_pton(AF_INET, host, &server.sin_addr) != 1 ||
        (ntohl(server.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "loadgen: refusing %s: only loopback addresses (127.0.0.0/8) are allowed\n", host);
        return 2;
    }
    if (port <= 0 || port > 65535 || nconns < 0 || nidle < 0 || nconns > MAX_CONNS ||
        nidle > MAX_CONNS || nconns + nidle > MAX_CONNS ||
        (churn && (nconns < 1 || nidle)) || msgsize < 1 || msgsize > (64u << 20) ||
        !(seconds > 0) || seconds > 3600 || warmup < 0 || warmup > 600 ||
        !(connect_timeout > 0) || connect_timeout > 600)
        usage();
    server.sin_port = htons((uint16_t)port);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    pat = malloc(msgsize + 256);
    rbuf = malloc(msgsize);
    hist = calloc(HIST_US, sizeof *hist);
    struct conn *conns = calloc((size_t)(nconns + nidle), sizeof *conns);
    if (!pat || !rbuf || !hist || !conns) { perror("loadgen: malloc"); return 1; }
    for (size_t j = 0; j < msgsize + 256; j++) pat[j] = (unsigned char)(j & 255);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) { perror("loadgen: epoll_create1"); return 1; }

    int idle_ok = 0;
    if (nidle > 0) {
        idle_ok = open_idle(conns + nconns, nidle);
        if (idle_ok < 0) return 1;
        mark("idle_ready");
        /* The driver reads the server's memory now; it says when it is done. */
        struct pollfd p = { .fd = 0, .events = POLLIN };
        if (poll(&p, 1, IDLE_WAIT_S * 1000) > 0) {
            char line[64];
            if (read(0, line, sizeof line) < 0) perror("loadgen: read stdin");
        }
    }

    /* Ping-pong measures a steady state: the warm-up starts once every
       connection has had its first echo (a fork server on a busy core can
       take seconds to accept 1,000 clients), or after -T seconds. */
    double t0 = now(), ready_at = 0.0;
    int ready = churn || nconns == 0, confirmed = 0, ready_timeout = 0;
    int lost_before = lost_unconfirmed;
    warm_end = ready ? t0 + warmup : HUGE_VAL;
    t_end = ready ? warm_end + seconds : HUGE_VAL;
    for (int i = 0; i < nconns; i++) open_conn(&conns[i], t0);

    struct epoll_event evs[512];
    int warm_done = 0;
    double cpu0 = 0.0, cpu1, next_check = t0 + 0.1;
    for (;;) {
        double t = now();
        if (!warm_done && t >= warm_end) {
            mark("warm_end");
            if (marks) {
                wait_driver();
                /* The window starts now, after the driver's reading. */
                t = now();
                warm_end = t;
                t_end = t + seconds;
            }
            cpu0 = cpu_now();
            warm_done = 1;
        }
        if (t >= t_end || nconns == 0) break;
        if (!ready && (confirmed + lost_unconfirmed - lost_before >= nconns ||
                       t - t0 > connect_timeout)) {
            ready = 1;
            ready_at = t - t0;
            ready_timeout = confirmed + lost_unconfirmed - lost_before < nconns;
            warm_end = t + warmup;
            t_end = warm_end + seconds;
            continue;
        }
        double until = !ready ? t + 0.1 : warm_done ? t_end : warm_end;
        int n = epoll_wait(epfd, evs, 512, (int)((until - t) * 1000) + 1);
        if (n < 0) { if (errno == EINTR) continue; perror("loadgen: epoll_wait"); return 1; }
        t = now();
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->state == ST_CONNECTING) {
                if (connected(c) < 0) goto replace;
                established++;
                c->state = ST_ACTIVE;
                set_out(c, 0);
                start_msg(c, msgsize, churn ? c->t_connect : t);
                if (c->state == ST_DEAD) goto replace;
                continue;
            }
            if (c->state != ST_ACTIVE) continue;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                if (do_recv(c)) {
                    if (churn) {
                        /* Nothing more may come: a byte beyond the echo is an error. */
                        char extra;
                        if (recv(c->fd, &extra, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {
                            fail(c, 1, "more bytes came back than were sent");
                            goto replace;
                        }
                        count(c, t, c->t_connect);
                        drop(c);
                        c->state = ST_FREE;
                        goto replace;
                    }
                    count(c, t, c->t_start);
                    if (!c->confirmed) { c->confirmed = 1; confirmed++; }
                    c->k++;
                    if (t < t_end) start_msg(c, msgsize, t);
                    continue;
                }
            }
            if (c->state == ST_ACTIVE && (evs[i].events & EPOLLOUT) && c->sent < c->size)
                do_send(c);
        replace:
            if (churn && (c->state == ST_DEAD || c->state == ST_FREE) && t < t_end)
                open_conn(c, t);
        }
        /* Connections that have not connected within -T seconds have failed. */
        if (t < next_check) continue;
        next_check = t + 0.1;
        for (int i = 0; i < nconns; i++) {
            if (conns[i].state == ST_CONNECTING && t - conns[i].t_connect > connect_timeout)
                fail(&conns[i], 0, "connect timed out");
            /* A churn slot whose connect failed at once gets another try. */
            if (churn && conns[i].state == ST_DEAD && t < t_end) open_conn(&conns[i], t);
        }
    }
    cpu1 = cpu_now();
    if (!warm_done) { cpu0 = cpu1; mark("warm_end"); }
    mark("end");
    if (marks) wait_driver();   /* nothing is closed until the driver has read */
    /* A connection waiting more than a second for its echo at the end has
       stalled: a byte was lost, or the server stopped answering it. */
    int served = 0, stalled = 0, idle_lost = 0;
    for (int i = 0; i < nconns; i++) {
        served += conns[i].served;
        if (conns[i].state == ST_ACTIVE && conns[i].sent > conns[i].recvd &&
            !conns[i].busy && t_end - conns[i].t_start > 1.0 && nconns > 0 && !churn)
            stalled++;
    }
    /* An idle connection must still be open and silent. */
    for (int i = nconns; i < nconns + nidle; i++) {
        if (conns[i].state != ST_IDLE) continue;
        struct pollfd p = { .fd = conns[i].fd, .events = POLLIN | POLLRDHUP };
        if (poll(&p, 1, 0) > 0) idle_lost++;
    }
    for (int i = 0; i < nconns + nidle; i++)
        if (conns[i].state != ST_DEAD && conns[i].state != ST_FREE && conns[i].fd >= 0)
            close(conns[i].fd);

    printf("{\"mode\":\"%s\",\"conns\":%d,\"idle\":%d,\"idle_ok\":%d,\"idle_lost\":%d,"
           "\"stalled\":%d,\"confirmed\":%d,\"ready_s\":%.3f,\"ready_timeout\":%d,\"size\":%zu,"
           "\"seconds\":%g,\"requests\":%llu,\"per_s\":%.1f,\"errors\":%llu,\"failures\":%llu,\"busy\":%llu,"
           "\"bytes_checked\":%llu,\"established\":%d,\"served\":%d,"
           "\"p50_us\":%.1f,\"p99_us\":%.1f,\"lat_overflow\":%llu,\"client_cpu_s\":%.4f}\n",
           argv[1], nconns, nidle, idle_ok, idle_lost, stalled, confirmed, ready_at, ready_timeout, msgsize, seconds, (unsigned long long)requests,
           (double)requests / seconds, (unsigned long long)errors,
           (unsigned long long)failures, (unsigned long long)turned_away,
           (unsigned long long)bytes_checked, established, served,
           percentile(0.50), percentile(0.99), (unsigned long long)hist_over, cpu1 - cpu0);
    fflush(stdout);
    return errors ? 1 : 0;
}
