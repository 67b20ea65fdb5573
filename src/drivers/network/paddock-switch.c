/*
 * paddock-switch: the Ethernet switch between container VMs, run by paddockd inside the network
 * namespace it owns.
 *
 * Why a switch of our own: a Linux bridge (and 802.1Q on the host) need kernel modules that not
 * every host has -- this project's CI kernel has neither -- and a userspace switch needs only
 * a tun device. Each VM has one NIC, a trunk, that QEMU connects to a unix socket of ours with
 * `-netdev stream` (frames prefixed by a 4-byte big-endian length). Every network the VM is on
 * is an 802.1Q VLAN on that trunk; which VLAN of which VM belongs to which network is what the
 * daemon tells us. A network may also have a tap device in the namespace: its gateway, where
 * the kernel of the namespace routes, NATs and where the port forwarder connects from.
 *
 * Control: line commands on a unix socket, each answered "ok" or "err <why>":
 *   net <net> <tap|->        add a network (with a gateway tap of that name, or none)
 *   unnet <net>              remove it
 *   port <port> <path>       listen on <path> for the VM's NIC (one connection at a time)
 *   unport <port>            close it
 *   ep <port> <vid> <net>    frames of <port> tagged <vid> belong to <net>
 *   unep <port> <vid>
 * A switch that cannot keep up drops frames, as a real one does; it never blocks on one port.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_NETS 256
#define MAX_PORTS 1024
#define MAX_EPS 4096
#define MAX_MACS_PER_NET 512
#define MAX_CTL 8
#define ID_LEN 80
#define MAX_FRAME 65600
#define OUTQ_CAP (1u << 20)
#define CTL_BUF 4096

enum kind { K_CTL_LISTEN = 1, K_CTL, K_PORT_LISTEN, K_PORT, K_TAP };

struct mac_entry { uint8_t mac[6]; int target; /* endpoint index, or -1 for the tap */ };

struct net {
	int used;
	char id[ID_LEN];
	int tap_fd;
	struct mac_entry macs[MAX_MACS_PER_NET];
	int nmacs;
};

struct port {
	int used;
	char id[ID_LEN];
	char path[108];
	int listen_fd, fd;
	uint8_t *in; size_t in_len;
	uint8_t *out; size_t out_off, out_len;
};

struct endpoint { int used, port, vid, net; };

struct ctl { int fd; char buf[CTL_BUF]; size_t len; };

static struct net nets[MAX_NETS];
static struct port ports[MAX_PORTS];
static struct endpoint eps[MAX_EPS];
static struct ctl ctls[MAX_CTL];
static int ep_fd;
static uint64_t dropped;

static uint64_t tagv(enum kind k, int i) { return (uint64_t)k << 32 | (uint32_t)i; }

static void watch(int fd, enum kind k, int i, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.u64 = tagv(k, i) };
	if (epoll_ctl(ep_fd, EPOLL_CTL_ADD, fd, &ev) < 0 && errno == EEXIST) epoll_ctl(ep_fd, EPOLL_CTL_MOD, fd, &ev);
}

static void unwatch(int fd) { epoll_ctl(ep_fd, EPOLL_CTL_DEL, fd, NULL); }

static int find_net(const char *id)
{
	for (int i = 0; i < MAX_NETS; i++) if (nets[i].used && strcmp(nets[i].id, id) == 0) return i;
	return -1;
}

static int find_port(const char *id)
{
	for (int i = 0; i < MAX_PORTS; i++) if (ports[i].used && strcmp(ports[i].id, id) == 0) return i;
	return -1;
}

static int find_ep(int port, int vid)
{
	for (int i = 0; i < MAX_EPS; i++) if (eps[i].used && eps[i].port == port && eps[i].vid == vid) return i;
	return -1;
}

/* Forgets learned addresses that point at a target that is going away. */
static void forget_target(int net, int target)
{
	struct net *n = &nets[net];
	for (int i = 0; i < n->nmacs;) {
		if (n->macs[i].target == target) n->macs[i] = n->macs[--n->nmacs];
		else i++;
	}
}

static void learn(int net, const uint8_t *mac, int target)
{
	if (mac[0] & 1) return; /* a multicast source is bogus */
	struct net *n = &nets[net];
	for (int i = 0; i < n->nmacs; i++) {
		if (memcmp(n->macs[i].mac, mac, 6) == 0) { n->macs[i].target = target; return; }
	}
	if (n->nmacs == MAX_MACS_PER_NET) n->nmacs--; /* full: forget one; flooding still delivers */
	memcpy(n->macs[n->nmacs].mac, mac, 6);
	n->macs[n->nmacs++].target = target;
}

static int lookup(int net, const uint8_t *mac, int *target)
{
	struct net *n = &nets[net];
	for (int i = 0; i < n->nmacs; i++)
		if (memcmp(n->macs[i].mac, mac, 6) == 0) { *target = n->macs[i].target; return 1; }
	return 0;
}

/* ---------- output ---------- */

static void port_flush(int pi)
{
	struct port *p = &ports[pi];
	while (p->out_len > p->out_off) {
		ssize_t w = write(p->fd, p->out + p->out_off, p->out_len - p->out_off);
		if (w < 0) { if (errno == EAGAIN || errno == EINTR) break; p->out_off = p->out_len; break; }
		p->out_off += w;
	}
	if (p->out_off == p->out_len) p->out_off = p->out_len = 0;
	watch(p->fd, K_PORT, pi, EPOLLIN | (p->out_len ? EPOLLOUT : 0));
}

/* Queues an untagged frame to an endpoint, adding its VLAN tag. */
static void send_to_endpoint(int ei, const uint8_t *frame, size_t len)
{
	struct port *p = &ports[eps[ei].port];
	if (p->fd < 0 || len < 14) return;
	size_t need = 4 + len + 4;
	if (p->out_len + need > OUTQ_CAP) {
		if (p->out_off) { memmove(p->out, p->out + p->out_off, p->out_len - p->out_off); p->out_len -= p->out_off; p->out_off = 0; }
		if (p->out_len + need > OUTQ_CAP) { dropped++; return; }
	}
	uint8_t *o = p->out + p->out_len;
	uint32_t flen = len + 4;
	o[0] = flen >> 24; o[1] = flen >> 16; o[2] = flen >> 8; o[3] = flen;
	memcpy(o + 4, frame, 12);
	o[16] = 0x81; o[17] = 0x00; o[18] = (eps[ei].vid >> 8) & 0x0f; o[19] = eps[ei].vid & 0xff;
	memcpy(o + 20, frame + 12, len - 12);
	int was_empty = p->out_len == p->out_off;
	p->out_len += need;
	if (was_empty) port_flush(eps[ei].port);
}

static void send_to_tap(int net, const uint8_t *frame, size_t len)
{
	if (nets[net].tap_fd < 0) return;
	if (write(nets[net].tap_fd, frame, len) < 0) dropped++;
}

/* Delivers an untagged frame within a network; `from` is the source (endpoint, or -1: tap). */
static void forward(int net, const uint8_t *frame, size_t len, int from)
{
	int target;
	if (!(frame[0] & 1) && lookup(net, frame, &target)) {
		if (target == from) return;
		if (target < 0) send_to_tap(net, frame, len);
		else send_to_endpoint(target, frame, len);
		return;
	}
	for (int i = 0; i < MAX_EPS; i++)
		if (eps[i].used && eps[i].net == net && i != from) send_to_endpoint(i, frame, len);
	if (from != -1) send_to_tap(net, frame, len);
}

/* ---------- input ---------- */

static void frame_from_port(int pi, uint8_t *f, size_t len)
{
	/* Only tagged frames: an untagged one belongs to no network. */
	if (len < 18 || f[12] != 0x81 || f[13] != 0x00) return;
	int vid = (f[14] & 0x0f) << 8 | f[15];
	int ei = find_ep(pi, vid);
	if (ei < 0) return;
	memmove(f + 12, f + 16, len - 16); /* drop the tag */
	len -= 4;
	learn(eps[ei].net, f + 6, ei);
	forward(eps[ei].net, f, len, ei);
}

static void port_close_conn(int pi)
{
	struct port *p = &ports[pi];
	if (p->fd >= 0) { unwatch(p->fd); close(p->fd); }
	p->fd = -1; p->in_len = 0; p->out_off = p->out_len = 0;
}

static void port_read(int pi)
{
	struct port *p = &ports[pi];
	for (;;) {
		ssize_t r = read(p->fd, p->in + p->in_len, MAX_FRAME + 4 - p->in_len);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) { port_close_conn(pi); return; }
		if (r < 0) return;
		p->in_len += r;
		size_t off = 0;
		while (p->in_len - off >= 4) {
			uint32_t flen = (uint32_t)p->in[off] << 24 | p->in[off + 1] << 16 | p->in[off + 2] << 8 | p->in[off + 3];
			if (flen > MAX_FRAME) { port_close_conn(pi); return; }
			if (p->in_len - off < 4 + flen) break;
			frame_from_port(pi, p->in + off + 4, flen);
			if (p->fd < 0) return;
			off += 4 + flen;
		}
		memmove(p->in, p->in + off, p->in_len - off);
		p->in_len -= off;
	}
}

static void tap_read(int ni)
{
	static uint8_t f[MAX_FRAME];
	for (int budget = 256; budget > 0; budget--) {
		ssize_t r = read(nets[ni].tap_fd, f, sizeof f);
		if (r < 14) return;
		learn(ni, f + 6, -1);
		forward(ni, f, r, -1);
	}
}

/* ---------- control ---------- */

static int open_tap(const char *name)
{
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) return -1;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) { int e = errno; close(fd); errno = e; return -1; }
	return fd;
}

static int listen_unix(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof a.sun_path) { errno = ENAMETOOLONG; return -1; }
	strcpy(a.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) return -1;
	unlink(path);
	if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4) < 0) { int e = errno; close(fd); errno = e; return -1; }
	return fd;
}

static void remove_endpoint(int ei)
{
	forget_target(eps[ei].net, ei);
	eps[ei].used = 0;
}

static const char *cmd_net(char **a, int n)
{
	if (n != 3 || strlen(a[1]) >= ID_LEN) return "usage: net <id> <tap|->";
	if (find_net(a[1]) >= 0) return "network exists";
	int ni = -1;
	for (int i = 0; i < MAX_NETS; i++) if (!nets[i].used) { ni = i; break; }
	if (ni < 0) return "too many networks";
	int tap = -1;
	if (strcmp(a[2], "-") != 0 && (tap = open_tap(a[2])) < 0) return strerror(errno);
	memset(&nets[ni], 0, sizeof nets[ni]);
	nets[ni].used = 1; nets[ni].tap_fd = tap;
	strcpy(nets[ni].id, a[1]);
	if (tap >= 0) watch(tap, K_TAP, ni, EPOLLIN);
	return NULL;
}

static const char *cmd_unnet(char **a, int n)
{
	int ni = n == 2 ? find_net(a[1]) : -1;
	if (ni < 0) return "no such network";
	for (int i = 0; i < MAX_EPS; i++) if (eps[i].used && eps[i].net == ni) remove_endpoint(i);
	if (nets[ni].tap_fd >= 0) { unwatch(nets[ni].tap_fd); close(nets[ni].tap_fd); }
	nets[ni].used = 0;
	return NULL;
}

static const char *cmd_port(char **a, int n)
{
	if (n != 3 || strlen(a[1]) >= ID_LEN) return "usage: port <id> <path>";
	if (find_port(a[1]) >= 0) return "port exists";
	int pi = -1;
	for (int i = 0; i < MAX_PORTS; i++) if (!ports[i].used) { pi = i; break; }
	if (pi < 0) return "too many ports";
	struct port *p = &ports[pi];
	int lfd = listen_unix(a[2]);
	if (lfd < 0) return strerror(errno);
	if (!p->in) p->in = malloc(MAX_FRAME + 4);
	if (!p->out) p->out = malloc(OUTQ_CAP);
	if (!p->in || !p->out) { close(lfd); return "out of memory"; }
	p->used = 1; p->listen_fd = lfd; p->fd = -1; p->in_len = p->out_off = p->out_len = 0;
	snprintf(p->id, sizeof p->id, "%s", a[1]);
	snprintf(p->path, sizeof p->path, "%s", a[2]);
	watch(lfd, K_PORT_LISTEN, pi, EPOLLIN);
	return NULL;
}

static const char *cmd_unport(char **a, int n)
{
	int pi = n == 2 ? find_port(a[1]) : -1;
	if (pi < 0) return "no such port";
	for (int i = 0; i < MAX_EPS; i++) if (eps[i].used && eps[i].port == pi) remove_endpoint(i);
	port_close_conn(pi);
	unwatch(ports[pi].listen_fd);
	close(ports[pi].listen_fd);
	unlink(ports[pi].path);
	ports[pi].used = 0;
	return NULL;
}

static const char *cmd_ep(char **a, int n, int add)
{
	if (n != (add ? 4 : 3)) return add ? "usage: ep <port> <vid> <net>" : "usage: unep <port> <vid>";
	int pi = find_port(a[1]);
	int vid = atoi(a[2]);
	if (pi < 0) return "no such port";
	if (vid < 1 || vid > 4094) return "bad vlan id";
	int ei = find_ep(pi, vid);
	if (!add) { if (ei < 0) return "no such endpoint"; remove_endpoint(ei); return NULL; }
	int ni = find_net(a[3]);
	if (ni < 0) return "no such network";
	if (ei >= 0) return "endpoint exists";
	for (int i = 0; i < MAX_EPS; i++) if (!eps[i].used) { ei = i; break; }
	if (ei < 0) return "too many endpoints";
	eps[ei] = (struct endpoint){ .used = 1, .port = pi, .vid = vid, .net = ni };
	return NULL;
}

static void ctl_reply(struct ctl *c, const char *err)
{
	char line[256];
	int len = err ? snprintf(line, sizeof line, "err %s\n", err) : snprintf(line, sizeof line, "ok\n");
	if (write(c->fd, line, len) < 0) { /* the daemon reconnects if it went away */ }
}

static void ctl_line(struct ctl *c, char *line)
{
	char *a[8]; int n = 0;
	for (char *save = NULL, *w = strtok_r(line, " \t\r", &save); w && n < 8; w = strtok_r(NULL, " \t\r", &save)) a[n++] = w;
	if (n == 0) return;
	const char *err;
	if (strcmp(a[0], "net") == 0) err = cmd_net(a, n);
	else if (strcmp(a[0], "unnet") == 0) err = cmd_unnet(a, n);
	else if (strcmp(a[0], "port") == 0) err = cmd_port(a, n);
	else if (strcmp(a[0], "unport") == 0) err = cmd_unport(a, n);
	else if (strcmp(a[0], "ep") == 0) err = cmd_ep(a, n, 1);
	else if (strcmp(a[0], "unep") == 0) err = cmd_ep(a, n, 0);
	else if (strcmp(a[0], "ping") == 0) err = NULL;
	else err = "unknown command";
	ctl_reply(c, err);
}

static void ctl_read(int ci)
{
	struct ctl *c = &ctls[ci];
	ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
	if (r <= 0) {
		if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
		unwatch(c->fd); close(c->fd); c->fd = -1; c->len = 0;
		return;
	}
	c->len += r;
	char *nl;
	while ((nl = memchr(c->buf, '\n', c->len))) {
		*nl = 0;
		ctl_line(c, c->buf);
		size_t used = nl + 1 - c->buf;
		memmove(c->buf, nl + 1, c->len - used);
		c->len -= used;
	}
	if (c->len == sizeof c->buf - 1) c->len = 0; /* an absurd line: forget it */
}

int main(int argc, char **argv)
{
	if (argc != 2) { fprintf(stderr, "usage: paddock-switch CONTROL_SOCKET\n"); return 2; }
	prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the daemon */
	if (getppid() == 1) return 1;
	signal(SIGPIPE, SIG_IGN);
	ep_fd = epoll_create1(EPOLL_CLOEXEC);
	for (int i = 0; i < MAX_CTL; i++) ctls[i].fd = -1;
	int cl = listen_unix(argv[1]);
	if (cl < 0) { perror("paddock-switch: control socket"); return 1; }
	watch(cl, K_CTL_LISTEN, 0, EPOLLIN);
	fprintf(stderr, "paddock-switch: ready\n");
	struct epoll_event evs[64];
	for (;;) {
		int n = epoll_wait(ep_fd, evs, 64, -1);
		if (n < 0) { if (errno == EINTR) continue; perror("epoll_wait"); return 1; }
		for (int k = 0; k < n; k++) {
			enum kind kind = evs[k].data.u64 >> 32;
			int i = (int)(uint32_t)evs[k].data.u64;
			uint32_t e = evs[k].events;
			switch (kind) {
			case K_CTL_LISTEN: {
				int fd = accept4(cl, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
				if (fd < 0) break;
				int ci = -1;
				for (int j = 0; j < MAX_CTL; j++) if (ctls[j].fd < 0) { ci = j; break; }
				if (ci < 0) { close(fd); break; }
				ctls[ci].fd = fd; ctls[ci].len = 0;
				watch(fd, K_CTL, ci, EPOLLIN);
				break;
			}
			case K_CTL: if (ctls[i].fd >= 0) ctl_read(i); break;
			case K_PORT_LISTEN: {
				if (!ports[i].used) break;
				int fd = accept4(ports[i].listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
				if (fd < 0) break;
				port_close_conn(i); /* a reconnecting VMM replaces its old connection */
				ports[i].fd = fd;
				watch(fd, K_PORT, i, EPOLLIN);
				break;
			}
			case K_PORT:
				if (!ports[i].used || ports[i].fd < 0) break;
				if (e & EPOLLOUT) port_flush(i);
				if (ports[i].fd >= 0 && (e & (EPOLLIN | EPOLLHUP | EPOLLERR))) port_read(i);
				break;
			case K_TAP: if (nets[i].used && nets[i].tap_fd >= 0) tap_read(i); break;
			}
		}
	}
}
