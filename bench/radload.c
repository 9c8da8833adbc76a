/*
 * radload: raw-UDP RADIUS load generator.
 *
 * Reads pre-built request packets (each prefixed by its length, 2 octets,
 * network order) and sends them to HOST:PORT keeping up to W requests
 * outstanding. A reply is matched by (socket, identifier) and only its code
 * is checked: the packets are built (and signed) in Python, so no crypto is
 * needed here. Prints one JSON line with counts, rate and latencies.
 *
 * The identifier of each packet is fixed by the builder (it is covered by
 * the Message-Authenticator), so a packet goes out on the next socket in
 * turn whose slot for that identifier is free; with more than 256 in
 * flight the extra sockets provide the extra slots.
 *
 * -P: each socket keeps at most ceil(W / SOCKETS) outstanding, like NASes
 * that each wait for their own replies. A server whose SO_REUSEPORT workers
 * got an uneven share of the source ports (the kernel hashes each to one)
 * then answers each worker's sockets as fast as that worker goes, instead
 * of the round robin pacing every socket alike by the busiest worker.
 *
 * Usage: radload -f FILE -h HOST -p PORT [-w W] [-n N] [-T SECONDS]
 *                [-t TIMEOUT_MS] [-s SOCKETS] [-P]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SOCKS 64
#define BATCH 64

enum { FREE = 0, BUSY, COOLING };

struct slot {
	uint8_t state;
	uint64_t t_ns; /* send time, or end of cooling */
};

static struct slot slots[MAX_SOCKS][256];
static int socks[MAX_SOCKS];
static int nsocks;
static long out_per[MAX_SOCKS]; /* outstanding per socket */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *msg)
{
	perror(msg);
	exit(2);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* Read the length-prefixed packets into one buffer plus offsets. */
static size_t load_packets(const char *path, uint8_t **buf, size_t **offs)
{
	FILE *f = fopen(path, "rb");
	long size;
	size_t n = 0, pos = 0, cap = 1024;

	if (!f)
		die(path);
	if (fseek(f, 0, SEEK_END) || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
		die("seek");
	*buf = malloc((size_t)size + 1);
	*offs = malloc(cap * sizeof(size_t));
	if (!*buf || !*offs || fread(*buf, 1, (size_t)size, f) != (size_t)size)
		die("read packets");
	fclose(f);
	while (pos + 2 <= (size_t)size) {
		size_t len = ((size_t)(*buf)[pos] << 8) | (*buf)[pos + 1];

		if (len < 20 || pos + 2 + len > (size_t)size) {
			fprintf(stderr, "radload: corrupt packet file at offset %zu\n", pos);
			exit(2);
		}
		if (n == cap) {
			cap *= 2;
			*offs = realloc(*offs, cap * sizeof(size_t));
			if (!*offs)
				die("realloc");
		}
		(*offs)[n++] = pos;
		pos += 2 + len;
	}
	return n;
}

static void usage(void)
{
	fprintf(stderr, "usage: radload -f FILE -h HOST -p PORT [-w W] [-n N] [-T SECONDS]"
			" [-t TIMEOUT_MS] [-s SOCKETS] [-P]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *file = NULL, *host = "127.0.0.1", *port = NULL;
	long window = 64, total = -1, timeout_ms = 1000;
	double max_seconds = 0;
	int opt, want_socks = 0, per_socket = 0;
	uint8_t *pkts;
	size_t *offs, npkts;

	while ((opt = getopt(argc, argv, "f:h:p:w:n:T:t:s:P")) != -1) {
		switch (opt) {
		case 'f': file = optarg; break;
		case 'h': host = optarg; break;
		case 'p': port = optarg; break;
		case 'w': window = atol(optarg); break;
		case 'n': total = atol(optarg); break;
		case 'T': max_seconds = atof(optarg); break;
		case 't': timeout_ms = atol(optarg); break;
		case 's': want_socks = atoi(optarg); break;
		case 'P': per_socket = 1; break;
		default: usage();
		}
	}
	if (!file || !port || window < 1)
		usage();
	npkts = load_packets(file, &pkts, &offs);
	if (npkts == 0) {
		fprintf(stderr, "radload: no packets in %s\n", file);
		return 2;
	}
	if (total < 0)
		total = (long)npkts;

	/* One socket per 256 outstanding, one spare so that a slot held by a
	 * slow reply never stalls the next packet with that identifier; when
	 * packets are reused, another spare so a reused packet can leave from
	 * a different source port than last time (servers cache replies by
	 * source address, port and identifier). */
	nsocks = want_socks > 0 ? want_socks
		: (int)((window + 255) / 256) + 1 + (total > (long)npkts);
	if (nsocks > MAX_SOCKS)
		nsocks = MAX_SOCKS;

	struct addrinfo hints = { .ai_socktype = SOCK_DGRAM }, *ai;
	int rc = getaddrinfo(host, port, &hints, &ai);

	if (rc) {
		fprintf(stderr, "radload: %s: %s\n", host, gai_strerror(rc));
		return 2;
	}
	for (int s = 0; s < nsocks; s++) {
		int bufsz = 4 << 20;

		socks[s] = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK, 0);
		if (socks[s] < 0)
			die("socket");
		setsockopt(socks[s], SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz));
		setsockopt(socks[s], SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof(bufsz));
		if (connect(socks[s], ai->ai_addr, ai->ai_addrlen))
			die("connect");
	}
	freeaddrinfo(ai);
	long per_cap = per_socket ? (window + nsocks - 1) / nsocks : window;

	/* grows on demand: with -T, -n may be far above what gets sent */
	size_t lat_cap = total < (1 << 20) ? (size_t)total : (1 << 20);
	uint32_t *lat_us = malloc(lat_cap * sizeof(uint32_t));
	long sent = 0, received = 0, accepts = 0, rejects = 0, others = 0;
	long timeouts = 0, outstanding = 0, send_errors = 0;
	uint64_t timeout_ns = (uint64_t)timeout_ms * 1000000ull;
	uint64_t start = now_ns(), last_reply = start, next_sweep = start;
	uint64_t deadline = max_seconds > 0 ? start + (uint64_t)(max_seconds * 1e9) : 0;
	struct pollfd pfd[MAX_SOCKS];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	static uint8_t rbuf[BATCH][4096];
	int stop_sending = 0;

	if (!lat_us)
		die("malloc");
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = rbuf[i];
		iov[i].iov_len = sizeof(rbuf[i]);
		memset(&msgs[i], 0, sizeof(msgs[i]));
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	for (int s = 0; s < nsocks; s++) {
		pfd[s].fd = socks[s];
		pfd[s].events = POLLIN;
	}

	while (1) {
		uint64_t t = now_ns();

		if (deadline && t >= deadline)
			stop_sending = 1;
		/* Fill the window. */
		while (!stop_sending && outstanding < window && sent < total) {
			size_t idx = (size_t)sent % npkts;
			const uint8_t *p = pkts + offs[idx] + 2;
			size_t len = ((size_t)pkts[offs[idx]] << 8) | pkts[offs[idx] + 1];
			uint8_t id = p[1];
			/* Round robin over the sockets (a server with SO_REUSEPORT
			 * workers hashes each source port to one of them), shifted
			 * by one each time the packets are replayed. */
			int first = (int)(((size_t)sent + (size_t)sent / npkts) % (size_t)nsocks);
			int s = -1;

			for (int k = 0; k < nsocks; k++) {
				int c = (first + k) % nsocks;
				struct slot *sl = &slots[c][id];

				if (sl->state == COOLING && sl->t_ns <= t)
					sl->state = FREE;
				if (sl->state == FREE && out_per[c] < per_cap) {
					s = c;
					break;
				}
			}
			if (s < 0)
				break; /* every slot for this id is busy: wait for replies */
			if (send(socks[s], p, len, 0) < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					break;
				send_errors++;
			}
			slots[s][id].state = BUSY;
			slots[s][id].t_ns = t;
			out_per[s]++;
			outstanding++;
			sent++;
		}
		if (outstanding == 0 && (sent >= total || stop_sending))
			break;

		if (poll(pfd, (nfds_t)nsocks, 1) < 0 && errno != EINTR)
			die("poll");
		t = now_ns();
		for (int s = 0; s < nsocks; s++) {
			if (!(pfd[s].revents & (POLLIN | POLLERR)))
				continue;
			for (;;) {
				int n = recvmmsg(socks[s], msgs, BATCH, MSG_DONTWAIT, NULL);

				if (n <= 0)
					break; /* EAGAIN, or ECONNREFUSED when nobody listens */
				for (int i = 0; i < n; i++) {
					const uint8_t *r = rbuf[i];
					struct slot *sl;

					if (msgs[i].msg_len < 20)
						continue;
					sl = &slots[s][r[1]];
					if (sl->state != BUSY)
						continue; /* late or duplicate reply */
					sl->state = FREE;
					out_per[s]--;
					outstanding--;
					if ((size_t)received == lat_cap) {
						lat_cap *= 2;
						lat_us = realloc(lat_us, lat_cap * sizeof(uint32_t));
						if (!lat_us)
							die("realloc");
					}
					lat_us[received] = (uint32_t)((t - sl->t_ns) / 1000);
					received++;
					last_reply = t;
					if (r[0] == 2)
						accepts++;
					else if (r[0] == 3)
						rejects++;
					else
						others++;
				}
				if (n < BATCH)
					break;
			}
		}
		/* Expire lost requests; their slots cool down for another timeout
		 * so a late reply cannot be taken for the next request's. */
		if (t >= next_sweep) {
			for (int s = 0; s < nsocks; s++)
				for (int id = 0; id < 256; id++) {
					struct slot *sl = &slots[s][id];

					if (sl->state == BUSY && t - sl->t_ns > timeout_ns) {
						sl->state = COOLING;
						sl->t_ns = t + timeout_ns;
						out_per[s]--;
						outstanding--;
						timeouts++;
					}
				}
			next_sweep = t + 10000000ull;
		}
	}

	double seconds = (double)((received ? last_reply : now_ns()) - start) / 1e9;
	double p50 = 0, p99 = 0;
	long nlat = received;

	if (nlat > 0) {
		qsort(lat_us, (size_t)nlat, sizeof(uint32_t), cmp_u32);
		p50 = lat_us[(size_t)((nlat - 1) * 50 / 100)] / 1000.0;
		p99 = lat_us[(size_t)((nlat - 1) * 99 / 100)] / 1000.0;
	}
	printf("{\"sent\": %ld, \"received\": %ld, \"accepts\": %ld, \"rejects\": %ld, "
	       "\"others\": %ld, \"timeouts\": %ld, \"send_errors\": %ld, \"window\": %ld, "
	       "\"sockets\": %d, \"per_socket\": %d, \"seconds\": %.3f, \"rps\": %.1f, \"p50_ms\": %.3f, "
	       "\"p99_ms\": %.3f}\n",
	       sent, received, accepts, rejects, others, timeouts, send_errors, window, nsocks,
	       per_socket, seconds, seconds > 0 ? received / seconds : 0.0, p50, p99);
	return 0;
}
