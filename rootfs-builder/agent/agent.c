/*
 * paddock-agent: PID 1 of every Paddock guest VM.
 *
 * It mounts the guest's pseudo filesystems, opens the host channel (virtio-serial port
 * "paddock.agent", or a vsock listener when there is no such port), says READY, and then
 * serves the requests described in ../PROTOCOL.md: mounts, processes with pipes or a TTY,
 * signals, resizes, flow-controlled stdio and exit statuses.
 *
 * One thread, one poll loop, no heap churn on the hot path. Written in C and linked statically
 * against musl so that the whole initramfs is this one file (about 100 KiB): there is no
 * runtime to start, which matters when the guest boots under TCG.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <poll.h>
#include <pty.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* linux/vm_sockets.h is not among musl's headers; this ABI struct is stable. */
struct sockaddr_vm {
	sa_family_t svm_family;
	unsigned short svm_reserved1;
	unsigned int svm_port;
	unsigned int svm_cid;
	unsigned char svm_flags;
	unsigned char svm_zero[3];
};
#define VMADDR_CID_ANY (-1U)
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

#define AGENT_VERSION "0.1.0"
#define PROTOCOL_VERSION 1
#define PORT_NAME "paddock.agent"
#define VSOCK_PORT 1024

#define MAX_FRAME (1u << 20)
#define INITIAL_WINDOW (256u * 1024)
#define MAX_PROCS 256
#define MAX_OUTQ (4u << 20)
#define READ_CHUNK 32768
#define ORPHAN_STREAM_GRACE_MS 200

enum {
	M_READY = 1, M_RESULT = 2, M_STDOUT = 4, M_STDERR = 5, M_EXIT = 6, M_WINDOW_G = 7, M_PONG = 8,
	M_MOUNT = 10, M_START = 11, M_STDIN = 12, M_SIGNAL = 13, M_RESIZE = 14, M_WINDOW_H = 15,
	M_PING = 16, M_SHUTDOWN = 17, M_SET_TIME = 18, M_SYMLINK = 19, M_HOSTNAME = 20, M_PS = 21, M_READ_FILE = 22,
	M_NET_ADD = 23, M_NET_REMOVE = 24, M_DNS_QUERY = 25, M_DNS_ANSWER = 26,
};
enum {
	T_VERSION = 1, T_KERNEL = 2, T_AGENT = 3,
	T_ARG = 10, T_ENV = 11, T_CWD = 12, T_ROOT = 13, T_UID = 14, T_GID = 15, T_GROUP = 16,
	T_TTY = 17, T_ROWS = 18, T_COLS = 19,
	T_SOURCE = 20, T_TARGET = 21, T_FSTYPE = 22, T_MFLAGS = 23, T_DATA = 24, T_STDIN_OPEN = 25,
	T_ERRNO = 30, T_MESSAGE = 31, T_PID = 32, T_EXIT_CODE = 33, T_SIGNAL = 34, T_BYTES = 35,
	T_SIGNUM = 36, T_SECONDS = 40, T_NANOS = 41, T_PIDNS = 26, T_JOIN_PIDNS_OF = 27,
	T_IFNAME = 50, T_VLAN = 51, T_MAC = 52, T_IPV4 = 53, T_PREFIX = 54, T_GATEWAY = 55, T_MTU = 56,
};

/* VM templates (issue 7): the host restored this VM from a saved template (see handle_restored). */
enum { M_RESTORED = 40 };

/* ---------- small utilities ---------- */

static void logmsg(const char *fmt, ...)
{
	va_list ap;
	char buf[512];
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0) return;
	if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
	buf[n++] = '\n';
	/* fd 2 is /dev/console (the 8250 serial line) when the kernel gave us one. */
	(void)!write(2, buf, n);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* ---------- growable byte buffer ---------- */

struct buf { uint8_t *data; size_t len, cap, off; };

static void buf_reserve(struct buf *b, size_t extra)
{
	if (b->off && b->off == b->len) b->off = b->len = 0;
	if (b->len + extra <= b->cap) return;
	if (b->off) { /* compact before growing */
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off; b->off = 0;
		if (b->len + extra <= b->cap) return;
	}
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + extra) cap *= 2;
	uint8_t *d = realloc(b->data, cap);
	if (!d) { logmsg("agent: out of memory"); _exit(1); }
	b->data = d; b->cap = cap;
}
static void buf_put(struct buf *b, const void *p, size_t n) { buf_reserve(b, n); memcpy(b->data + b->len, p, n); b->len += n; }
static size_t buf_pending(const struct buf *b) { return b->len - b->off; }

/* ---------- TLV payload builder and reader ---------- */

struct tlv_out { uint8_t data[4096]; size_t len; };

static void tlv_bytes(struct tlv_out *t, uint16_t tag, const void *p, size_t n)
{
	if (t->len + 6 + n > sizeof t->data) n = sizeof t->data - t->len - 6; /* truncate messages */
	put16(t->data + t->len, tag); put32(t->data + t->len + 2, n);
	memcpy(t->data + t->len + 6, p, n); t->len += 6 + n;
}
static void tlv_u32(struct tlv_out *t, uint16_t tag, uint32_t v) { uint8_t b[4]; put32(b, v); tlv_bytes(t, tag, b, 4); }
static void tlv_str(struct tlv_out *t, uint16_t tag, const char *s) { tlv_bytes(t, tag, s, strlen(s)); }

/* Iterates the fields of a payload; returns 0 at the end or on a malformed field. */
struct tlv_it { const uint8_t *p, *end; };
static int tlv_next(struct tlv_it *it, uint16_t *tag, const uint8_t **val, uint32_t *len)
{
	if (it->end - it->p < 6) return 0;
	*tag = get16(it->p); *len = get32(it->p + 2);
	if ((size_t)(it->end - it->p - 6) < *len) return 0;
	*val = it->p + 6; it->p += 6 + *len;
	return 1;
}
static char *dupstr(const uint8_t *v, uint32_t n)
{
	char *s = malloc(n + 1);
	if (!s) return NULL;
	memcpy(s, v, n); s[n] = 0;
	return s;
}

/* ---------- the host channel ---------- */

static int chan_fd = -1;
static struct buf chan_in, chan_out;

static void send_frame(uint16_t type, uint32_t id, const void *payload, size_t n)
{
	uint8_t h[12];
	put32(h, n); put16(h + 4, type); put16(h + 6, 0); put32(h + 8, id);
	buf_put(&chan_out, h, 12);
	if (n) buf_put(&chan_out, payload, n);
}

static void send_result(uint32_t id, int err, const char *msg, int pid)
{
	struct tlv_out t = { .len = 0 };
	tlv_u32(&t, T_ERRNO, err);
	if (msg) tlv_str(&t, T_MESSAGE, msg);
	if (pid > 0) tlv_u32(&t, T_PID, pid);
	send_frame(M_RESULT, id, t.data, t.len);
}

/* READY: after a boot, and again after a clone's restore (the host waits for it in both cases). */
static void send_ready(void)
{
	struct utsname u;
	uname(&u);
	struct tlv_out t = { .len = 0 };
	tlv_u32(&t, T_VERSION, PROTOCOL_VERSION);
	tlv_str(&t, T_KERNEL, u.release);
	tlv_str(&t, T_AGENT, AGENT_VERSION);
	send_frame(M_READY, 0, t.data, t.len);
}

static int find_virtio_port(char *path, size_t n)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	if (!d) return -1;
	struct dirent *e;
	int found = -1;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.') continue;
		char p[300], name[64] = { 0 };
		snprintf(p, sizeof p, "/sys/class/virtio-ports/%s/name", e->d_name);
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0) continue;
		ssize_t r = read(fd, name, sizeof name - 1);
		close(fd);
		if (r > 0 && name[r - 1] == '\n') name[r - 1] = 0;
		if (strcmp(name, PORT_NAME) == 0) {
			snprintf(path, n, "/dev/%s", e->d_name);
			found = 0;
			break;
		}
	}
	closedir(d);
	return found;
}

/* A virtio-vsock device is present when the transport driver has bound one. */
static int have_vsock_device(void)
{
	DIR *d = opendir("/sys/bus/virtio/drivers/vmw_vsock_virtio_transport");
	if (!d) return 0;
	struct dirent *e;
	int found = 0;
	while ((e = readdir(d))) if (strncmp(e->d_name, "virtio", 6) == 0) found = 1;
	closedir(d);
	return found;
}

/*
 * Hypervisors without virtio-serial name a tty for the channel on the kernel command line:
 * paddock.channel=/dev/hvc1 (Xen's PV channel), /dev/ttyS0 (VirtualBox's serial port).
 */
static ssize_t slurp(const char *path, char *buf, size_t cap);

static int channel_tty_from_cmdline(char *path, size_t n)
{
	char cmdline[4096];
	ssize_t len = slurp("/proc/cmdline", cmdline, sizeof cmdline - 1);
	if (len <= 0) return -1;
	cmdline[len] = 0;
	for (char *save = NULL, *w = strtok_r(cmdline, " \n", &save); w; w = strtok_r(NULL, " \n", &save)) {
		if (strncmp(w, "paddock.channel=/dev/", 21) == 0 && strlen(w + 16) < n) { strcpy(path, w + 16); return 0; }
	}
	return -1;
}

static int open_raw_tty(const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) return -1;
	struct termios t;
	if (tcgetattr(fd, &t) == 0) {
		cfmakeraw(&t);
		cfsetispeed(&t, B115200);
		cfsetospeed(&t, B115200);
		tcsetattr(fd, TCSANOW, &t);
	}
	return fd;
}

static int open_channel(void)
{
	char path[300];
	char tty[64];
	int named_tty = channel_tty_from_cmdline(tty, sizeof tty) == 0;
	/* The port is usually probed before init runs; allow a little time for late probing. */
	for (int i = 0; i < 500; i++) {
		if (named_tty) {
			int fd = open_raw_tty(tty);
			if (fd >= 0) return fd;
			usleep(10000);
			continue;
		}
		if (find_virtio_port(path, sizeof path) == 0) {
			int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
			if (fd >= 0) return fd;
		}
		if (have_vsock_device()) {
			int vs = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
			struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = VSOCK_PORT };
			if (vs >= 0 && bind(vs, (struct sockaddr *)&a, sizeof a) == 0 && listen(vs, 1) == 0) {
				int c = accept4(vs, NULL, NULL, SOCK_CLOEXEC);
				close(vs);
				if (c >= 0) return c;
			} else if (vs >= 0) close(vs);
		}
		usleep(10000);
	}
	return -1;
}

/* ---------- processes ---------- */

struct proc {
	uint32_t id;
	pid_t pid;
	int tty;
	int in_fd, out_fd, err_fd; /* -1 when closed; with a TTY, out_fd is the master and in_fd == out_fd */
	struct buf in_q;           /* stdin bytes waiting for the pipe */
	int in_close_pending;      /* host closed stdin; close once in_q drains */
	uint32_t out_window;       /* bytes the host still accepts */
	uint32_t in_granted_unused;/* stdin credit we still owe back to the host */
	int exited, status;
	uint64_t exited_at;
};

static struct proc procs[MAX_PROCS];

static struct proc *proc_by_id(uint32_t id)
{
	for (int i = 0; i < MAX_PROCS; i++) if (procs[i].id == id) return &procs[i];
	return NULL;
}
static struct proc *proc_by_pid(pid_t pid)
{
	for (int i = 0; i < MAX_PROCS; i++) if (procs[i].id && procs[i].pid == pid) return &procs[i];
	return NULL;
}

static void close_fd(int *fd) { if (*fd >= 0) close(*fd); *fd = -1; }

static void proc_close_stdin(struct proc *p)
{
	if (p->tty) {
		/* A TTY has no half-close: send the terminal's EOF character, as a terminal does on Ctrl-D. */
		if (p->in_fd >= 0) { char eof = 4; (void)!write(p->in_fd, &eof, 1); }
		return;
	}
	close_fd(&p->in_fd);
}

static void proc_output_eof(struct proc *p, int which)
{
	if (which == 1 && p->out_fd >= 0) {
		if (p->tty) p->in_fd = -1; /* same fd */
		close_fd(&p->out_fd);
		send_frame(M_STDOUT, p->id, NULL, 0);
	}
	if (which == 2 && p->err_fd >= 0) {
		close_fd(&p->err_fd);
		send_frame(M_STDERR, p->id, NULL, 0);
	}
}

static void proc_maybe_finish(struct proc *p)
{
	if (!p->exited || p->out_fd >= 0 || p->err_fd >= 0) return;
	struct tlv_out t = { .len = 0 };
	if (WIFSIGNALED(p->status)) {
		tlv_u32(&t, T_EXIT_CODE, 128 + WTERMSIG(p->status));
		tlv_u32(&t, T_SIGNAL, WTERMSIG(p->status));
	} else {
		tlv_u32(&t, T_EXIT_CODE, WEXITSTATUS(p->status));
		tlv_u32(&t, T_SIGNAL, 0);
	}
	send_frame(M_EXIT, p->id, t.data, t.len);
	close_fd(&p->in_fd);
	free(p->in_q.data);
	memset(p, 0, sizeof *p);
	p->in_fd = p->out_fd = p->err_fd = -1;
}

struct start_req {
	char *argv[1024]; int argc;
	char *envp[1024]; int envc;
	char *cwd, *root;
	uid_t uid; gid_t gid;
	gid_t groups[64]; int ngroups;
	int tty, stdin_open; unsigned rows, cols;
	int new_pidns;          /* the process is PID 1 of a new PID namespace (a container's main) */
	pid_t join_pidns_of;    /* host pid whose PID namespace the process joins (an exec) */
};

static void free_start_req(struct start_req *r)
{
	for (int i = 0; i < r->argc; i++) free(r->argv[i]);
	for (int i = 0; i < r->envc; i++) free(r->envp[i]);
	free(r->cwd); free(r->root);
}

/* Runs in the child: never returns. Reports a failure's errno through err_pipe. */
static void child_exec(struct start_req *r, int in, int out, int err, int err_pipe)
{
	sigset_t all; sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
	if (r->tty) {
		setsid();
		ioctl(in, TIOCSCTTY, 0);
	} else {
		setsid(); /* its own process group, so a signal to the group stays inside the container */
	}
	dup2(in, 0); dup2(out, 1); dup2(err, 2);
	if (in > 2) close(in);
	if (out > 2 && out != in) close(out);
	if (err > 2 && err != in && err != out) close(err);
	int e = 0;
	const char *step = "";
	if (r->root && (chroot(r->root) < 0 || chdir("/") < 0)) { e = errno; step = "chroot"; goto fail; }
	if (r->cwd && chdir(r->cwd) < 0) { e = errno; step = "chdir"; goto fail; }
	if (setgroups(r->ngroups, r->groups) < 0) { e = errno; step = "setgroups"; goto fail; }
	if (setgid(r->gid) < 0) { e = errno; step = "setgid"; goto fail; }
	if (setuid(r->uid) < 0) { e = errno; step = "setuid"; goto fail; }
	r->envp[r->envc] = NULL;
	r->argv[r->argc] = NULL;
	environ = r->envp; /* execvp searches the PATH of the new environment */
	execvp(r->argv[0], r->argv);
	e = errno; step = "exec";
fail:;
	uint8_t b[68] = { 0 };
	put32(b, e);
	strncpy((char *)b + 4, step, 63);
	(void)!write(err_pipe, b, sizeof b);
	_exit(127);
}

/*
 * An exec joins the container's PID namespace. setns(CLONE_NEWPID) only moves the caller's
 * future children, so this child forks once more: the grandchild becomes the process, and this
 * child stays as a small relay that forwards signals and passes the exit status on (the agent
 * tracks the relay's pid).
 */
static pid_t relay_target;
static void relay_signal(int sig) { if (relay_target > 0) kill(relay_target, sig); }

static void join_pidns_and_exec(struct start_req *r, int in, int out, int err, int err_pipe)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/ns/pid", (int)r->join_pidns_of);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWPID) < 0) {
		uint8_t b[68] = { 0 };
		put32(b, errno);
		strncpy((char *)b + 4, "setns", 63);
		(void)!write(err_pipe, b, sizeof b);
		_exit(127);
	}
	close(fd);
	sigset_t all; sigemptyset(&all);
	pid_t child = fork();
	if (child == 0) child_exec(r, in, out, err, err_pipe);
	/* The relay keeps no stream open, or the host would never see end-of-file. */
	/* Nor any descriptor of the agent's (another process's stdin pipe, the host channel). */
	syscall(SYS_close_range, 3, ~0U, 0);
	close(in); if (out != in) close(out); if (err != in && err != out) close(err);
	relay_target = child;
	for (int s = 1; s < NSIG; s++) if (s != SIGKILL && s != SIGSTOP && s != SIGCHLD) signal(s, relay_signal);
	sigprocmask(SIG_SETMASK, &all, NULL);
	int status = 0;
	while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
	if (WIFSIGNALED(status)) {
		signal(WTERMSIG(status), SIG_DFL);
		kill(getpid(), WTERMSIG(status));
	}
	_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128);
}

static void handle_start(uint32_t id, const uint8_t *pl, uint32_t n)
{
	struct start_req r;
	memset(&r, 0, sizeof r);
	r.rows = 24; r.cols = 80;
	struct tlv_it it = { pl, pl + n };
	uint16_t tag; const uint8_t *v; uint32_t len;
	while (tlv_next(&it, &tag, &v, &len)) {
		uint32_t u = len == 4 ? get32(v) : 0;
		switch (tag) {
		case T_ARG: if (r.argc < 1023) r.argv[r.argc++] = dupstr(v, len); break;
		case T_ENV: if (r.envc < 1023) r.envp[r.envc++] = dupstr(v, len); break;
		case T_CWD: free(r.cwd); r.cwd = dupstr(v, len); break;
		case T_ROOT: free(r.root); r.root = dupstr(v, len); break;
		case T_UID: r.uid = u; break;
		case T_GID: r.gid = u; break;
		case T_GROUP: if (r.ngroups < 64) r.groups[r.ngroups++] = u; break;
		case T_TTY: r.tty = u != 0; break;
		case T_ROWS: r.rows = u; break;
		case T_COLS: r.cols = u; break;
		case T_STDIN_OPEN: r.stdin_open = u != 0; break;
		case T_PIDNS: r.new_pidns = u != 0; break;
		case T_JOIN_PIDNS_OF: { struct proc *o = proc_by_id(u); r.join_pidns_of = o ? o->pid : -1; break; }
		}
	}
	struct proc *slot = NULL;
	if (id == 0 || proc_by_id(id)) { send_result(id, EEXIST, "process id in use", 0); goto out; }
	if (r.argc == 0) { send_result(id, EINVAL, "no command", 0); goto out; }
	for (int i = 0; i < MAX_PROCS && !slot; i++) if (!procs[i].id) slot = &procs[i];
	if (!slot) { send_result(id, EAGAIN, "too many processes", 0); goto out; }

	int in_r = -1, in_w = -1, out_r = -1, out_w = -1, err_r = -1, err_w = -1, master = -1, slave = -1;
	int ep[2];
	if (pipe2(ep, O_CLOEXEC) < 0) { send_result(id, errno, "pipe", 0); goto out; }
	if (r.tty) {
		struct winsize ws = { .ws_row = r.rows, .ws_col = r.cols };
		if (openpty(&master, &slave, NULL, NULL, &ws) < 0) {
			send_result(id, errno, "openpty", 0); close(ep[0]); close(ep[1]); goto out;
		}
		fcntl(master, F_SETFD, FD_CLOEXEC);
		in_r = out_w = err_w = slave;
	} else {
		int a[2], b[2], c[2];
		if (pipe2(b, O_CLOEXEC) < 0 || pipe2(c, O_CLOEXEC) < 0) { send_result(id, errno, "pipe", 0); goto out; }
		out_r = b[0]; out_w = b[1]; err_r = c[0]; err_w = c[1];
		if (r.stdin_open) {
			if (pipe2(a, O_CLOEXEC) < 0) { send_result(id, errno, "pipe", 0); goto out; }
			in_r = a[0]; in_w = a[1];
		} else {
			in_r = open("/dev/null", O_RDONLY | O_CLOEXEC);
		}
	}
	if (r.join_pidns_of < 0) { send_result(id, ESRCH, "no such process to join", 0); close(ep[0]); close(ep[1]); goto out; }
	pid_t pid = r.new_pidns ? (pid_t)syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, 0, 0, 0, 0) : fork();
	if (pid == 0) {
		close(ep[0]);
		if (r.new_pidns && r.root) {
			/* Our own /proc, so the container sees its processes only, its main one as PID 1. */
			char procdir[4200];
			snprintf(procdir, sizeof procdir, "%s/proc", r.root);
			mount("proc", procdir, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
		}
		if (r.join_pidns_of > 0) join_pidns_and_exec(&r, in_r, out_w, err_w, ep[1]);
		/* dup2 in child_exec clears O_CLOEXEC on 0..2; everything else closes at exec. */
		child_exec(&r, in_r, out_w, err_w, ep[1]);
	}
	close(ep[1]);
	int fork_errno = errno;
	if (r.tty) close(slave);
	else { close(in_r); close(out_w); close(err_w); }
	if (pid < 0) {
		send_result(id, fork_errno, "fork", 0);
		close_fd(&master); close_fd(&in_w); close_fd(&out_r); close_fd(&err_r); close(ep[0]);
		goto out;
	}
	uint8_t eb[68];
	ssize_t got = read(ep[0], eb, sizeof eb); /* EOF (0) means exec succeeded */
	close(ep[0]);
	if (got == (ssize_t)sizeof eb) {
		eb[67] = 0;
		int e = (int)get32(eb);
		char msg[160];
		snprintf(msg, sizeof msg, "%s: %s", (char *)eb + 4, strerror(e));
		waitpid(pid, NULL, 0);
		send_result(id, e, msg, 0);
		close_fd(&master); close_fd(&in_w); close_fd(&out_r); close_fd(&err_r);
		goto out;
	}
	memset(slot, 0, sizeof *slot);
	slot->id = id; slot->pid = pid; slot->tty = r.tty;
	slot->out_window = INITIAL_WINDOW;
	if (r.tty) { slot->in_fd = slot->out_fd = master; slot->err_fd = -1; }
	else { slot->in_fd = in_w; slot->out_fd = out_r; slot->err_fd = err_r; }
	if (slot->in_fd >= 0) set_nonblock(slot->in_fd);
	if (slot->out_fd >= 0) set_nonblock(slot->out_fd);
	if (slot->err_fd >= 0) set_nonblock(slot->err_fd);
	send_result(id, 0, NULL, pid);
	if (slot->in_fd >= 0) { /* tell the host how much stdin it may send */
		struct tlv_out t = { .len = 0 };
		tlv_u32(&t, T_BYTES, INITIAL_WINDOW);
		send_frame(M_WINDOW_G, id, t.data, t.len);
	}
out:
	free_start_req(&r);
}

static int mkdir_p(const char *path)
{
	char tmp[4096];
	size_t n = strlen(path);
	if (n >= sizeof tmp) return -1;
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/') continue;
		*p = 0;
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST) return -1;
		*p = '/';
	}
	if (mkdir(tmp, 0755) < 0 && errno != EEXIST) return -1;
	return 0;
}

static void handle_mount(uint32_t id, const uint8_t *pl, uint32_t n)
{
	char *src = NULL, *target = NULL, *fstype = NULL, *data = NULL;
	unsigned long flags = 0;
	struct tlv_it it = { pl, pl + n };
	uint16_t tag; const uint8_t *v; uint32_t len;
	while (tlv_next(&it, &tag, &v, &len)) {
		switch (tag) {
		case T_SOURCE: free(src); src = dupstr(v, len); break;
		case T_TARGET: free(target); target = dupstr(v, len); break;
		case T_FSTYPE: free(fstype); fstype = dupstr(v, len); break;
		case T_DATA: free(data); data = dupstr(v, len); break;
		case T_MFLAGS: if (len == 4) flags = get32(v); break;
		}
	}
	if (!target || target[0] != '/') { send_result(id, EINVAL, "mount: absolute TARGET required", 0); goto out; }
	struct stat st, sst;
	if (stat(target, &st) < 0) {
		/* A bind mount of a file (a device node, /etc/hosts) needs a file to land on. */
		int file = (flags & MS_BIND) && src && stat(src, &sst) == 0 && !S_ISDIR(sst.st_mode);
		char parent[4096];
		snprintf(parent, sizeof parent, "%s", target);
		char *slash = strrchr(parent, '/');
		if (file && slash && slash != parent) { *slash = 0; mkdir_p(parent); }
		int r = file ? open(target, O_CREAT | O_WRONLY | O_CLOEXEC, 0644) : mkdir_p(target);
		if (r < 0) { send_result(id, errno, "mount: create target", 0); goto out; }
		if (file) close(r);
	}
	if (mount(src ? src : "none", target, fstype, flags, data) < 0) {
		char msg[200];
		int e = errno;
		snprintf(msg, sizeof msg, "mount %s on %s (%s): %s", src ? src : "none", target, fstype ? fstype : "-", strerror(e));
		send_result(id, e, msg, 0);
		goto out;
	}
	send_result(id, 0, NULL, 0);
out:
	free(src); free(target); free(fstype); free(data);
}

static void handle_symlink(uint32_t id, const uint8_t *pl, uint32_t n)
{
	char *src = NULL, *target = NULL;
	struct tlv_it it = { pl, pl + n };
	uint16_t tag; const uint8_t *v; uint32_t len;
	while (tlv_next(&it, &tag, &v, &len)) {
		if (tag == T_SOURCE) { free(src); src = dupstr(v, len); }
		if (tag == T_TARGET) { free(target); target = dupstr(v, len); }
	}
	if (!src || !target || target[0] != '/') send_result(id, EINVAL, "symlink: SOURCE and absolute TARGET required", 0);
	else if (symlink(src, target) < 0 && errno != EEXIST) send_result(id, errno, "symlink", 0);
	else send_result(id, 0, NULL, 0);
	free(src); free(target);
}

static void handle_hostname(uint32_t id, const uint8_t *pl, uint32_t n)
{
	struct tlv_it it = { pl, pl + n };
	uint16_t tag; const uint8_t *v; uint32_t len;
	while (tlv_next(&it, &tag, &v, &len)) {
		if (tag != T_DATA) continue;
		send_result(id, sethostname((const char *)v, len) < 0 ? errno : 0, NULL, 0);
		return;
	}
	send_result(id, EINVAL, "hostname: DATA required", 0);
}

/* Reads a small file (procfs) whole; returns bytes read or -1. */
static ssize_t slurp(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return -1;
	size_t n = 0;
	ssize_t r;
	while (n < cap && (r = read(fd, buf + n, cap - n)) > 0) n += r;
	close(fd);
	return n;
}

/*
 * One MESSAGE per process: "pid ppid uid ticks starttime tty|cmdline", where ticks is utime+stime
 * and starttime is in clock ticks since boot (fields of /proc/PID/stat); the agent itself and
 * kernel threads are left out.
 */
static void handle_ps(uint32_t id)
{
	static struct tlv_out t;
	t.len = 0;
	tlv_u32(&t, T_ERRNO, 0);
	DIR *d = opendir("/proc");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		int pid = atoi(e->d_name);
		if (pid <= 1) continue;
		char path[64], stat[1024], cmd[512], line[700];
		snprintf(path, sizeof path, "/proc/%d/stat", pid);
		ssize_t sn = slurp(path, stat, sizeof stat - 1);
		if (sn <= 0) continue;
		stat[sn] = 0;
		char *close_paren = strrchr(stat, ')');
		if (!close_paren) continue;
		char comm[64] = { 0 };
		char *open_paren = strchr(stat, '(');
		if (open_paren && close_paren > open_paren) snprintf(comm, sizeof comm, "%.*s", (int)(close_paren - open_paren - 1), open_paren + 1);
		char st; int ppid, pgrp, session, tty_nr; unsigned long utime, stime; unsigned long long start = 0;
		/* fields after ')': state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime ... starttime(22) */
		if (sscanf(close_paren + 2, "%c %d %d %d %d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %llu",
			   &st, &ppid, &pgrp, &session, &tty_nr, &utime, &stime, &start) < 8) continue;
		if (pid == 2 || ppid == 2) continue; /* kernel threads are not the container's */
		char exe[64] = { 0 };
		snprintf(path, sizeof path, "/proc/%d/exe", pid);
		if (readlink(path, exe, sizeof exe - 1) > 0 && strcmp(exe, "/init") == 0) continue; /* exec relays */
		snprintf(path, sizeof path, "/proc/%d/status", pid);
		char status[2048]; unsigned uid = 0;
		ssize_t stn = slurp(path, status, sizeof status - 1);
		if (stn > 0) { status[stn] = 0; char *u = strstr(status, "\nUid:"); if (u) uid = strtoul(u + 5, NULL, 10); }
		snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
		ssize_t cn = slurp(path, cmd, sizeof cmd - 1);
		if (cn <= 0) { snprintf(cmd, sizeof cmd, "[%s]", comm); cn = strlen(cmd); }
		else { for (ssize_t i = 0; i < cn; i++) if (!cmd[i]) cmd[i] = ' '; while (cn > 0 && cmd[cn - 1] == ' ') cn--; cmd[cn] = 0; }
		int ln = snprintf(line, sizeof line, "%d %d %u %lu %llu %d|%s", pid, ppid, uid, utime + stime, start, tty_nr, cmd);
		if (t.len + 6 + ln < sizeof t.data) tlv_bytes(&t, T_MESSAGE, line, ln);
	}
	if (d) closedir(d);
	send_frame(M_RESULT, id, t.data, t.len);
}

static void handle_read_file(uint32_t id, const uint8_t *pl, uint32_t n)
{
	static char content[3500];
	char *path = NULL;
	struct tlv_it it = { pl, pl + n };
	uint16_t tag; const uint8_t *v; uint32_t len;
	while (tlv_next(&it, &tag, &v, &len)) if (tag == T_TARGET) { free(path); path = dupstr(v, len); }
	ssize_t r = path ? slurp(path, content, sizeof content) : -1;
	if (r < 0) send_result(id, path ? errno : EINVAL, "read_file", 0);
	else {
		struct tlv_out t = { .len = 0 };
		tlv_u32(&t, T_ERRNO, 0);
		tlv_bytes(&t, T_DATA, content, r);
		send_frame(M_RESULT, id, t.data, t.len);
	}
	free(path);
}

static void handle_set_time(uint32_t id, const uint8_t *pl, uint32_t n)
{
	struct timespec ts = { 0 };
	struct tlv_it it = { pl, pl + n };
	uint16_t tag; const uint8_t *v; uint32_t len;
	while (tlv_next(&it, &tag, &v, &len)) {
		if (tag == T_SECONDS && len == 8) ts.tv_sec = (time_t)((uint64_t)get32(v) << 32 | get32(v + 4));
		if (tag == T_NANOS && len == 4) ts.tv_nsec = get32(v);
	}
	send_result(id, clock_settime(CLOCK_REALTIME, &ts) < 0 ? errno : 0, NULL, 0);
}

/* ---------- networks: VLAN interfaces on the trunk NIC, and the 127.0.0.11 resolver ---------- */

/*
 * The VM has at most one NIC, a trunk to the host's switch. Each network the container is on is
 * an 802.1Q VLAN on it, which the agent adds as an interface named as Docker names them (eth0,
 * eth1, ...). Old-style ioctls do it all: no netlink code, nothing in the initramfs but us.
 */
#define TRUNK_NAME "trunk0"
#define SIOCSIFVLAN_ 0x8983
struct vlan_ioctl_args_ {
	int cmd;
	char device1[24];
	union { char device2[24]; int VID; unsigned int name_type; } u;
	short vlan_qos;
};
enum { ADD_VLAN_CMD_ = 0, DEL_VLAN_CMD_ = 1, SET_VLAN_NAME_TYPE_CMD_ = 6, VLAN_NAME_TYPE_RAW_PLUS_VID_NO_PAD_ = 3 };

static int net_sock = -1;
static int trunk_ready;

static int ifreq_ioctl(unsigned long req, const char *name, struct ifreq *ifr)
{
	if (net_sock < 0) net_sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	snprintf(ifr->ifr_name, IFNAMSIZ, "%s", name);
	return ioctl(net_sock, req, ifr);
}

static int if_set_up(const char *name)
{
	struct ifreq ifr; memset(&ifr, 0, sizeof ifr);
	if (ifreq_ioctl(SIOCGIFFLAGS, name, &ifr) < 0) return -1;
	ifr.ifr_flags |= IFF_UP;
	return ifreq_ioctl(SIOCSIFFLAGS, name, &ifr);
}

/* The kernel calls the virtio-net device eth0; it becomes trunk0 so that eth0 can be a VLAN. */
static int ensure_trunk(void)
{
	if (trunk_ready) return 0;
	DIR *d = opendir("/sys/class/net");
	if (!d) return -1;
	struct dirent *e;
	char found[IFNAMSIZ] = "";
	while ((e = readdir(d))) {
		char link[300];
		struct stat st;
		if (e->d_name[0] == '.' || strlen(e->d_name) >= IFNAMSIZ) continue;
		snprintf(link, sizeof link, "/sys/class/net/%s/device", e->d_name);
		if (stat(link, &st) == 0) { memcpy(found, e->d_name, strlen(e->d_name) + 1); break; }
	}
	closedir(d);
	if (!found[0]) { errno = ENODEV; return -1; }
	if (strcmp(found, TRUNK_NAME) != 0) {
		struct ifreq ifr; memset(&ifr, 0, sizeof ifr);
		snprintf(ifr.ifr_newname, IFNAMSIZ, "%s", TRUNK_NAME);
		if (ifreq_ioctl(SIOCSIFNAME, found, &ifr) < 0) return -1;
	}
	struct vlan_ioctl_args_ va; memset(&va, 0, sizeof va);
	va.cmd = SET_VLAN_NAME_TYPE_CMD_; va.u.name_type = VLAN_NAME_TYPE_RAW_PLUS_VID_NO_PAD_;
	if (ioctl(net_sock, SIOCSIFVLAN_, &va) < 0) return -1;
	if (if_set_up(TRUNK_NAME) < 0) return -1;
	trunk_ready = 1;
	return 0;
}

static void put_sin(struct sockaddr *sa, const uint8_t *ip4)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)sa;
	memset(sin, 0, sizeof *sin);
	sin->sin_family = AF_INET;
	memcpy(&sin->sin_addr, ip4, 4);
}

static void handle_net_add(uint32_t id, const uint8_t *pl, uint32_t n)
{
	char name[IFNAMSIZ] = "";
	uint32_t vid = 0, prefix = 0, mtu = 0;
	const uint8_t *mac = NULL, *ip = NULL, *gw = NULL;
	struct tlv_it it = { pl, pl + n };
	uint16_t tag; const uint8_t *v; uint32_t len;
	while (tlv_next(&it, &tag, &v, &len)) {
		if (tag == T_IFNAME && len > 0 && len < IFNAMSIZ) { memcpy(name, v, len); name[len] = 0; }
		if (tag == T_VLAN && len == 4) vid = get32(v);
		if (tag == T_PREFIX && len == 4) prefix = get32(v);
		if (tag == T_MTU && len == 4) mtu = get32(v);
		if (tag == T_MAC && len == 6) mac = v;
		if (tag == T_IPV4 && len == 4) ip = v;
		if (tag == T_GATEWAY && len == 4) gw = v;
	}
	if (!name[0] || vid < 1 || vid > 4094 || !mac || !ip || prefix > 32) { send_result(id, EINVAL, "net add: IFNAME, VLAN, MAC, IPV4 required", 0); return; }
	if (ensure_trunk() < 0) { send_result(id, errno, "net add: trunk NIC", 0); return; }
	struct vlan_ioctl_args_ va; memset(&va, 0, sizeof va);
	va.cmd = ADD_VLAN_CMD_; snprintf(va.device1, sizeof va.device1, "%s", TRUNK_NAME); va.u.VID = vid;
	if (ioctl(net_sock, SIOCSIFVLAN_, &va) < 0) { send_result(id, errno, "net add: vlan", 0); return; }
	char vname[IFNAMSIZ];
	snprintf(vname, sizeof vname, "%s.%u", TRUNK_NAME, vid);
	struct ifreq ifr; memset(&ifr, 0, sizeof ifr);
	snprintf(ifr.ifr_newname, IFNAMSIZ, "%s", name);
	const char *step = "rename";
	if (ifreq_ioctl(SIOCSIFNAME, vname, &ifr) < 0) goto fail_vlan;
	memset(&ifr, 0, sizeof ifr);
	ifr.ifr_hwaddr.sa_family = 1; /* ARPHRD_ETHER */
	memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
	step = "mac";
	if (ifreq_ioctl(SIOCSIFHWADDR, name, &ifr) < 0) goto fail_named;
	if (mtu) { memset(&ifr, 0, sizeof ifr); ifr.ifr_mtu = mtu; ifreq_ioctl(SIOCSIFMTU, name, &ifr); }
	memset(&ifr, 0, sizeof ifr); put_sin(&ifr.ifr_addr, ip);
	step = "address";
	if (ifreq_ioctl(SIOCSIFADDR, name, &ifr) < 0) goto fail_named;
	uint8_t mask[4]; uint32_t m = prefix ? 0xffffffffu << (32 - prefix) : 0; put32(mask, m);
	memset(&ifr, 0, sizeof ifr); put_sin(&ifr.ifr_netmask, mask);
	step = "netmask";
	if (ifreq_ioctl(SIOCSIFNETMASK, name, &ifr) < 0) goto fail_named;
	step = "up";
	if (if_set_up(name) < 0) goto fail_named;
	if (gw) {
		struct rtentry rt; memset(&rt, 0, sizeof rt);
		uint8_t zero[4] = { 0 };
		put_sin(&rt.rt_dst, zero); put_sin(&rt.rt_genmask, zero); put_sin(&rt.rt_gateway, gw);
		rt.rt_flags = RTF_UP | RTF_GATEWAY; rt.rt_dev = name;
		if (ioctl(net_sock, SIOCADDRT, &rt) < 0 && errno != EEXIST) { step = "default route"; goto fail_named; }
	}
	send_result(id, 0, NULL, 0);
	return;
fail_named:
	snprintf(vname, sizeof vname, "%s", name);
fail_vlan: {
		int err = errno;
		char msg[64]; snprintf(msg, sizeof msg, "net add: %s", step);
		memset(&va, 0, sizeof va); va.cmd = DEL_VLAN_CMD_; snprintf(va.device1, sizeof va.device1, "%s", vname);
		ioctl(net_sock, SIOCSIFVLAN_, &va);
		send_result(id, err, msg, 0);
	}
}

static void handle_net_remove(uint32_t id, const uint8_t *pl, uint32_t n)
{
	char name[IFNAMSIZ] = "";
	struct tlv_it it = { pl, pl + n };
	uint16_t tag; const uint8_t *v; uint32_t len;
	while (tlv_next(&it, &tag, &v, &len))
		if (tag == T_IFNAME && len > 0 && len < IFNAMSIZ) { memcpy(name, v, len); name[len] = 0; }
	if (!name[0]) { send_result(id, EINVAL, "net remove: IFNAME required", 0); return; }
	struct vlan_ioctl_args_ va; memset(&va, 0, sizeof va);
	va.cmd = DEL_VLAN_CMD_; snprintf(va.device1, sizeof va.device1, "%s", name);
	if (net_sock < 0) net_sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	send_result(id, ioctl(net_sock, SIOCSIFVLAN_, &va) < 0 ? errno : 0, NULL, 0);
}

/*
 * Docker's embedded resolver answers at 127.0.0.11. Here the agent listens there and hands each
 * query to the host over the channel, where the daemon knows every container name and alias;
 * no route from the VM to the host is needed for name resolution.
 */
#define DNS_SLOTS 64
static int dns_fd = -1;
static struct { uint32_t id; struct sockaddr_in from; } dns_pending[DNS_SLOTS];
static uint32_t dns_next_id = 1;

static void dns_open(void)
{
	dns_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (dns_fd < 0) return;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(53) };
	a.sin_addr.s_addr = htonl(0x7f00000b);
	if (bind(dns_fd, (struct sockaddr *)&a, sizeof a) < 0) { logmsg("agent: dns bind: %s", strerror(errno)); close(dns_fd); dns_fd = -1; }
}

static void dns_read(void)
{
	static uint8_t q[4096];
	for (;;) {
		struct sockaddr_in from; socklen_t fl = sizeof from;
		ssize_t r = recvfrom(dns_fd, q, sizeof q, 0, (struct sockaddr *)&from, &fl);
		if (r <= 0) return;
		if (r < 12) continue;
		uint32_t id = dns_next_id++;
		if (!dns_next_id) dns_next_id = 1;
		dns_pending[id % DNS_SLOTS].id = id; /* a slot reused before its answer came: that query times out */
		dns_pending[id % DNS_SLOTS].from = from;
		send_frame(M_DNS_QUERY, id, q, r);
	}
}

static void dns_answer(uint32_t id, const uint8_t *pl, uint32_t n)
{
	if (dns_fd < 0 || !id || dns_pending[id % DNS_SLOTS].id != id) return;
	dns_pending[id % DNS_SLOTS].id = 0;
	sendto(dns_fd, pl, n, 0, (struct sockaddr *)&dns_pending[id % DNS_SLOTS].from, sizeof(struct sockaddr_in));
}

static void flush_channel(void)
{
	/* Best effort, blocking: the host should see our last answer before the VM goes. */
	if (chan_fd < 0) return;
	fcntl(chan_fd, F_SETFL, fcntl(chan_fd, F_GETFL) & ~O_NONBLOCK);
	while (buf_pending(&chan_out)) {
		ssize_t w = write(chan_fd, chan_out.data + chan_out.off, buf_pending(&chan_out));
		if (w <= 0) break;
		chan_out.off += w;
	}
}

static void power_off(void)
{
	flush_channel();
	sync();
	kill(-1, SIGKILL);
	/* With reboot=t and QEMU's -no-reboot, a reset ends the VM; ACPI power-off is not needed. */
	reboot(RB_AUTOBOOT);
	_exit(0);
}

/*
 * RESTORED: this VM is a clone of a saved template, so its kernel RNG state is the template's and
 * every clone would draw the same "random" bytes. Mix in the host's fresh bytes (DATA) and force a
 * CRNG reseed before anything else runs, then say READY again as after a boot. A clone whose RNG
 * cannot be reseeded must not run: power off instead. /proc/sys/kernel/random/boot_id is generated
 * on first read, which the template never does, so each clone gets its own after this.
 */
#define RNDADDENTROPY_ 0x40085203 /* _IOW('R', 0x03, int[2]) */
#define RNDRESEEDCRNG_ 0x5207     /* _IO('R', 0x07) */
static void handle_restored(uint32_t id, const uint8_t *pl, uint32_t n)
{
	(void)id;
	struct { int entropy_count; int buf_size; uint8_t buf[512]; } pool = { 0 };
	struct tlv_it it = { pl, pl + n };
	uint16_t tag; const uint8_t *v; uint32_t len;
	while (tlv_next(&it, &tag, &v, &len))
		if (tag == T_DATA && len <= sizeof pool.buf) { memcpy(pool.buf, v, len); pool.buf_size = len; }
	int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
	pool.entropy_count = pool.buf_size * 8;
	if (pool.buf_size < 32 || fd < 0 || ioctl(fd, RNDADDENTROPY_, &pool) < 0 || ioctl(fd, RNDRESEEDCRNG_) < 0) {
		logmsg("agent: cannot reseed the RNG of a restored VM (%d bytes: %s); powering off", pool.buf_size, strerror(errno));
		power_off();
	}
	close(fd);
	memset(&pool, 0, sizeof pool);
	send_ready();
}

static uint32_t get_u32_field(const uint8_t *pl, uint32_t n, uint16_t want, uint32_t dflt)
{
	struct tlv_it it = { pl, pl + n };
	uint16_t tag; const uint8_t *v; uint32_t len;
	while (tlv_next(&it, &tag, &v, &len)) if (tag == want && len == 4) return get32(v);
	return dflt;
}

static void handle_frame(uint16_t type, uint32_t id, const uint8_t *pl, uint32_t n)
{
	struct proc *p;
	switch (type) {
	case M_MOUNT: handle_mount(id, pl, n); break;
	case M_START: handle_start(id, pl, n); break;
	case M_STDIN:
		if (!(p = proc_by_id(id)) || p->in_fd < 0) break;
		if (n == 0) { if (buf_pending(&p->in_q)) p->in_close_pending = 1; else proc_close_stdin(p); }
		else { buf_put(&p->in_q, pl, n); p->in_granted_unused += n; }
		break;
	case M_SIGNAL:
		if ((p = proc_by_id(id)) && !p->exited) kill(p->pid, (int)get_u32_field(pl, n, T_SIGNUM, SIGTERM));
		break;
	case M_RESIZE:
		if ((p = proc_by_id(id)) && p->tty && p->out_fd >= 0) {
			struct winsize ws = { .ws_row = get_u32_field(pl, n, T_ROWS, 24), .ws_col = get_u32_field(pl, n, T_COLS, 80) };
			ioctl(p->out_fd, TIOCSWINSZ, &ws);
		}
		break;
	case M_WINDOW_H:
		if ((p = proc_by_id(id))) p->out_window += get_u32_field(pl, n, T_BYTES, 0);
		break;
	case M_PING: send_frame(M_PONG, id, pl, n); break;
	case M_SET_TIME: handle_set_time(id, pl, n); break;
	case M_SYMLINK: handle_symlink(id, pl, n); break;
	case M_HOSTNAME: handle_hostname(id, pl, n); break;
	case M_PS: handle_ps(id); break;
	case M_READ_FILE: handle_read_file(id, pl, n); break;
	case M_NET_ADD: handle_net_add(id, pl, n); break;
	case M_NET_REMOVE: handle_net_remove(id, pl, n); break;
	case M_DNS_ANSWER: dns_answer(id, pl, n); break;
	case M_SHUTDOWN: send_result(id, 0, NULL, 0); power_off(); break;
	case M_RESTORED: handle_restored(id, pl, n); break;
	default: logmsg("agent: unknown message type %u", type); break;
	}
}

static void parse_channel_input(void)
{
	for (;;) {
		size_t avail = buf_pending(&chan_in);
		if (avail < 12) return;
		const uint8_t *h = chan_in.data + chan_in.off;
		uint32_t len = get32(h);
		if (len > MAX_FRAME) { logmsg("agent: oversized frame (%u), dropping channel input", len); chan_in.off = chan_in.len; return; }
		if (avail < 12 + (size_t)len) return;
		handle_frame(get16(h + 4), get32(h + 8), h + 12, len);
		chan_in.off += 12 + len;
	}
}

/* ---------- guest setup ---------- */

static void mount_early(void)
{
	mkdir("/proc", 0755); mkdir("/sys", 0755); mkdir("/dev", 0755); mkdir("/run", 0755); mkdir("/tmp", 01777);
	mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	mkdir("/dev/pts", 0755);
	mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620,gid=5");
	symlink("pts/ptmx", "/dev/ptmx");
	mkdir("/dev/shm", 01777);
	mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
	mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	int lo = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (lo >= 0) {
		struct ifreq ifr;
		memset(&ifr, 0, sizeof ifr);
		strcpy(ifr.ifr_name, "lo");
		if (ioctl(lo, SIOCGIFFLAGS, &ifr) == 0) { ifr.ifr_flags |= IFF_UP; ioctl(lo, SIOCSIFFLAGS, &ifr); }
		close(lo);
	}
}

/*
 * Debian's cloud kernel has virtio as modules: the initramfs lists them, in dependency order.
 * Module parameters on the kernel command line ("virtio_mmio.device=..." that QEMU's microvm
 * appends) are not applied by the kernel to modules loaded later -- modprobe normally does that
 * -- so the agent passes each module its "name.param=value" words itself.
 */
static void load_modules(void)
{
	FILE *f = fopen("/etc/paddock/modules", "re");
	if (!f) return;
	static char cmdline[4096];
	ssize_t cn = slurp("/proc/cmdline", cmdline, sizeof cmdline - 1);
	cmdline[cn > 0 ? cn : 0] = 0;
	char line[512];
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = 0;
		if (!line[0]) continue;
		char name[512];
		const char *base = strrchr(line, '/');
		snprintf(name, sizeof name, "%s", base ? base + 1 : line);
		char *dot = strstr(name, ".ko");
		if (dot) *dot = 0;
		for (char *c = name; *c; c++) if (*c == '-') *c = '_';
		char params[2048] = "";
		size_t nlen = strlen(name);
		char words[4096];
		snprintf(words, sizeof words, "%s", cmdline);
		for (char *save = NULL, *w = strtok_r(words, " \n", &save); w; w = strtok_r(NULL, " \n", &save)) {
			if (strncmp(w, name, nlen) == 0 && w[nlen] == '.') {
				size_t used = strlen(params);
				snprintf(params + used, sizeof params - used, "%s%s", used ? " " : "", w + nlen + 1);
			}
		}
		int fd = open(line, O_RDONLY | O_CLOEXEC);
		if (fd < 0) { logmsg("agent: module %s: %s", line, strerror(errno)); continue; }
		if (syscall(SYS_finit_module, fd, params, 0) < 0 && errno != EEXIST)
			logmsg("agent: finit_module %s: %s", line, strerror(errno));
		close(fd);
	}
	fclose(f);
}

/* ---------- main loop ---------- */

int main(void)
{
	if (getpid() != 1) { fprintf(stderr, "paddock-agent must run as PID 1 of a guest VM\n"); return 1; }
	for (int i = 0; i < MAX_PROCS; i++) procs[i].in_fd = procs[i].out_fd = procs[i].err_fd = -1;
	mount_early();
	load_modules();
	setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGPIPE);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sigdelset(&mask, SIGPIPE);
	int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

	chan_fd = open_channel();
	if (chan_fd < 0) { logmsg("agent: no host channel (virtio-serial port %s or vsock)", PORT_NAME); power_off(); }
	set_nonblock(chan_fd);

	send_ready();

	dns_open();

	struct pollfd pfd[3 + MAX_PROCS * 3];
	struct { struct proc *p; int which; } owner[3 + MAX_PROCS * 3];
	int host_gone = 0;
	static uint8_t chunk[READ_CHUNK];

	for (;;) {
		int n = 0, timeout = -1;
		pfd[n] = (struct pollfd){ .fd = host_gone ? -1 : chan_fd, .events = POLLIN | (buf_pending(&chan_out) ? POLLOUT : 0) }; n++;
		pfd[n] = (struct pollfd){ .fd = sfd, .events = POLLIN }; n++;
		pfd[n] = (struct pollfd){ .fd = dns_fd, .events = POLLIN }; n++;
		int out_room = buf_pending(&chan_out) < MAX_OUTQ;
		for (int i = 0; i < MAX_PROCS; i++) {
			struct proc *p = &procs[i];
			if (!p->id) continue;
			if (p->exited && (p->out_fd >= 0 || p->err_fd >= 0)) {
				int64_t left = (int64_t)(p->exited_at + ORPHAN_STREAM_GRACE_MS) - (int64_t)now_ms();
				if (left <= 0) { proc_output_eof(p, 1); proc_output_eof(p, 2); proc_maybe_finish(p); continue; }
				if (timeout < 0 || left < timeout) timeout = (int)left;
			}
			int want_out = out_room && p->out_window > 0;
			if (p->out_fd >= 0) { pfd[n] = (struct pollfd){ .fd = p->out_fd, .events = want_out ? POLLIN : 0 }; owner[n].p = p; owner[n].which = 1; n++; }
			if (p->err_fd >= 0) { pfd[n] = (struct pollfd){ .fd = p->err_fd, .events = want_out ? POLLIN : 0 }; owner[n].p = p; owner[n].which = 2; n++; }
			if (!p->tty && p->in_fd >= 0 && buf_pending(&p->in_q)) { pfd[n] = (struct pollfd){ .fd = p->in_fd, .events = POLLOUT }; owner[n].p = p; owner[n].which = 0; n++; }
			if (p->tty && p->in_fd >= 0 && buf_pending(&p->in_q)) { /* the master is polled above; write opportunistically */
				ssize_t w = write(p->in_fd, p->in_q.data + p->in_q.off, buf_pending(&p->in_q));
				if (w > 0) p->in_q.off += w;
				if (buf_pending(&p->in_q)) timeout = timeout < 0 || timeout > 10 ? 10 : timeout;
			}
		}
		if (host_gone) timeout = timeout < 0 || timeout > 50 ? 50 : timeout;
		if (poll(pfd, n, timeout) < 0 && errno != EINTR) { logmsg("agent: poll: %s", strerror(errno)); continue; }

		/* host channel */
		if (host_gone) {
			ssize_t r = read(chan_fd, chunk, sizeof chunk);
			if (r > 0) { host_gone = 0; buf_put(&chan_in, chunk, r); parse_channel_input(); }
		} else {
			if (pfd[0].revents & POLLIN) {
				ssize_t r;
				while ((r = read(chan_fd, chunk, sizeof chunk)) > 0) buf_put(&chan_in, chunk, r);
				if (r == 0) host_gone = 1; /* no host connected to the port right now; retry later */
				parse_channel_input();
			}
			if (buf_pending(&chan_out)) {
				ssize_t w = write(chan_fd, chan_out.data + chan_out.off, buf_pending(&chan_out));
				if (w > 0) chan_out.off += w;
			}
		}

		/* children */
		if (pfd[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) == sizeof si) {}
			int status; pid_t pid;
			while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
				struct proc *p = proc_by_pid(pid);
				if (!p) continue; /* an orphan reparented to us */
				p->exited = 1; p->status = status; p->exited_at = now_ms();
			}
		}

		if (pfd[2].revents & POLLIN) dns_read();

		/* process streams */
		for (int i = 3; i < n; i++) {
			struct proc *p = owner[i].p;
			if (!pfd[i].revents || !p->id) continue;
			if (owner[i].which == 0) {
				ssize_t w = write(p->in_fd, p->in_q.data + p->in_q.off, buf_pending(&p->in_q));
				if (w < 0 && errno != EAGAIN) { p->in_q.off = p->in_q.len; close_fd(&p->in_fd); continue; }
				if (w > 0) p->in_q.off += w;
				continue;
			}
			int fd = owner[i].which == 1 ? p->out_fd : p->err_fd;
			if (fd < 0 || fd != pfd[i].fd) continue;
			size_t want = p->out_window < sizeof chunk ? p->out_window : sizeof chunk;
			if (!want) continue;
			ssize_t r = read(fd, chunk, want);
			if (r > 0) {
				send_frame(owner[i].which == 1 ? M_STDOUT : M_STDERR, p->id, chunk, r);
				p->out_window -= r;
			} else if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
				/* EOF, or EIO on a TTY master once every slave is closed */
				proc_output_eof(p, owner[i].which);
			}
		}

		/* stdin credit back to the host, stdin closes that were waiting for the queue to drain */
		for (int i = 0; i < MAX_PROCS; i++) {
			struct proc *p = &procs[i];
			if (!p->id) continue;
			if (p->in_granted_unused && buf_pending(&p->in_q) == 0) {
				struct tlv_out w = { .len = 0 };
				tlv_u32(&w, T_BYTES, p->in_granted_unused);
				send_frame(M_WINDOW_G, p->id, w.data, w.len);
				p->in_granted_unused = 0;
			}
			if (p->in_close_pending && buf_pending(&p->in_q) == 0) { p->in_close_pending = 0; proc_close_stdin(p); }
			proc_maybe_finish(p);
		}
		if (buf_pending(&chan_out) && !host_gone) {
			ssize_t w = write(chan_fd, chan_out.data + chan_out.off, buf_pending(&chan_out));
			if (w > 0) chan_out.off += w;
		}
	}
}
