/* What a sent datagram costs from a socket the process waits on through epoll, against a sibling socket of
 * the same address that nobody waits on (udp/src/pair.rs, docs/architecture.md "A worker sends from a
 * sibling socket"). Not a test and not run in CI.
 *
 *   gcc -O2 -o /tmp/sibling-send scripts/sibling-send.c
 *   for i in 1 2 3 4 5 6; do /tmp/sibling-send 0; /tmp/sibling-send 1; done
 *
 * Mode 0 sends on the socket registered with epoll (EPOLLIN, edge-triggered: what a media worker's runtime
 * does); mode 1 on its SO_REUSEPORT sibling, the group steered to the first socket by a classic BPF program.
 * Each run: 8 rounds of 400,000 datagrams of 120 bytes to 200 loopback receivers in sendmmsg batches of 50,
 * the receivers drained between bursts (untimed); prints each round's CPU per datagram (user + system of
 * the thread) and the mean of rounds 1-7, and checks that a datagram to the address reaches the first
 * socket only. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define RECEIVERS 200
#define BATCH 50
#define PORT 45123

static double thread_cpu(void) {
    struct rusage r;
    getrusage(RUSAGE_THREAD, &r);
    return r.ru_utime.tv_sec + r.ru_stime.tv_sec + 1e-6 * (r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

static int reuseport_socket(const struct sockaddr_in *addr) {
    int one = 1, s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(s, (const void *)addr, sizeof *addr)) {
        perror("bind");
        exit(1);
    }
    return s;
}

int main(int argc, char **argv) {
    int mode = argc > 1 ? atoi(argv[1]) : 0;
    int rx[RECEIVERS];
    struct sockaddr_in to[RECEIVERS];
    for (int i = 0; i < RECEIVERS; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof to[i];
        int big = 1 << 22;
        rx[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        bind(rx[i], (void *)&a, sizeof a);
        getsockname(rx[i], (void *)&to[i], &len);
        setsockopt(rx[i], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                               .sin_port = htons(PORT)};
    int first = reuseport_socket(&addr);
    struct sock_filter code[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
    struct sock_fprog prog = {1, code};
    if (setsockopt(first, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog)) {
        perror("SO_ATTACH_REUSEPORT_CBPF");
        return 1;
    }
    int sibling = reuseport_socket(&addr);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = first};
    epoll_ctl(ep, EPOLL_CTL_ADD, first, &ev);
    int sender = mode ? sibling : first;

    char payload[120];
    memset(payload, 1, sizeof payload);
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    double sum = 0;
    for (int round = 0; round < 8; round++) {
        double start = thread_cpu();
        long sent = 0;
        for (int k = 0; k < 2000; k++) {
            for (int j = 0; j < RECEIVERS; j += BATCH) {
                for (int i = 0; i < BATCH; i++) {
                    iov[i] = (struct iovec){payload, sizeof payload};
                    memset(&msgs[i], 0, sizeof msgs[i]);
                    msgs[i].msg_hdr.msg_iov = &iov[i];
                    msgs[i].msg_hdr.msg_iovlen = 1;
                    msgs[i].msg_hdr.msg_name = &to[j + i];
                    msgs[i].msg_hdr.msg_namelen = sizeof to[0];
                }
                int n = sendmmsg(sender, msgs, BATCH, 0);
                if (n > 0)
                    sent += n;
            }
            if (k % 20 == 19) {
                double drain = thread_cpu();
                char buf[200];
                for (int i = 0; i < RECEIVERS; i++)
                    while (recv(rx[i], buf, sizeof buf, 0) > 0) {
                    }
                start += thread_cpu() - drain;
            }
        }
        double us = (thread_cpu() - start) * 1e6 / sent;
        if (round > 0)
            sum += us;
        printf("mode %d round %d: %.3f us per datagram (%ld sent)\n", mode, round, us, sent);
    }
    int client = socket(AF_INET, SOCK_DGRAM, 0);
    char buf[8];
    sendto(client, "x", 1, 0, (void *)&addr, sizeof addr);
    usleep(1000);
    ssize_t on_first = recv(first, buf, sizeof buf, MSG_DONTWAIT);
    ssize_t on_sibling = recv(sibling, buf, sizeof buf, MSG_DONTWAIT);
    printf("mode %d mean of rounds 1-7: %.3f us per datagram; a datagram to the address: first socket %s, "
           "sibling %s\n", mode, sum / 7, on_first == 1 ? "got it" : "nothing",
           on_sibling == 1 ? "got it" : "nothing");
    return 0;
}
