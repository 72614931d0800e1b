#define _GNU_SOURCE
#include "CLBKitShim.h"

#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <signal.h>
#include <fcntl.h>

int lbk_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int lbk_epoll_add(int epfd, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

int lbk_epoll_mod(int epfd, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
}

int lbk_epoll_del(int epfd, int fd) {
    struct epoll_event ev = {0};
    return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &ev);
}

int lbk_epoll_wait(int epfd, uint32_t *events, uint64_t *datas, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n;
    do {
        n = epoll_wait(epfd, evs, max, timeout_ms);
    } while (n < 0 && errno == EINTR);
    for (int i = 0; i < n; i++) {
        events[i] = evs[i].events;
        datas[i] = evs[i].data.u64;
    }
    return n;
}

int lbk_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int lbk_eventfd_signal(int fd) {
    uint64_t one = 1;
    ssize_t n = write(fd, &one, sizeof one);
    return n == (ssize_t)sizeof one ? 0 : -1;
}

int lbk_eventfd_drain(int fd) {
    uint64_t value;
    ssize_t n = read(fd, &value, sizeof value);
    return n == (ssize_t)sizeof value ? 0 : -1;
}

int lbk_accept(int fd, void *addr, uint32_t *addrlen) {
    socklen_t len = *addrlen;
    int r = accept4(fd, (struct sockaddr *)addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    *addrlen = len;
    return r;
}

int lbk_socket_stream(int family) { return socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0); }

static inline uint64_t lbk_clock_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Per-job time on loop threads (see lbk_job_clock_begin in the header). `lbk_job_uses` counts
 * the reads served from `lbk_job_now`; 0 means the next read takes a fresh one. */
static __thread int lbk_job_caching = 0;
static __thread uint64_t lbk_job_now = 0;
static __thread unsigned lbk_job_uses = 0;
#define LBK_JOB_CLOCK_MAX_USES 8u

uint64_t lbk_monotonic_ns(void) {
    if (!lbk_job_caching) return lbk_clock_monotonic();
    if (lbk_job_uses == 0 || lbk_job_uses >= LBK_JOB_CLOCK_MAX_USES) {
        lbk_job_now = lbk_clock_monotonic();
        lbk_job_uses = 0;
    }
    lbk_job_uses++;
    return lbk_job_now;
}

void lbk_job_clock_begin(void) { lbk_job_caching = 1; lbk_job_uses = 0; }
void lbk_job_clock_next(void) { lbk_job_uses = 0; }
void lbk_job_clock_end(void) { lbk_job_caching = 0; }

uint64_t lbk_wall_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int lbk_setsockopt_int(int fd, int level, int name, int value) {
    return setsockopt(fd, level, name, &value, sizeof value);
}

int lbk_socket_error(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return -1;
    return err;
}

const int lbk_SOL_SOCKET = SOL_SOCKET;
const int lbk_SO_REUSEADDR = SO_REUSEADDR;
const int lbk_SO_REUSEPORT = SO_REUSEPORT;
const int lbk_IPPROTO_TCP = IPPROTO_TCP;
const int lbk_TCP_NODELAY = TCP_NODELAY;
const int lbk_MSG_NOSIGNAL = MSG_NOSIGNAL;
const int lbk_SHUT_WR = SHUT_WR;

#include <pthread.h>
#include <string.h>
int lbk_set_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, 15);
    buf[15] = 0;
    return pthread_setname_np(pthread_self(), buf);
}

static int lbk_signal_write_fd = -1;

static void lbk_signal_handler(int signo) {
    int saved = errno;
    unsigned char byte = (unsigned char)signo;
    if (lbk_signal_write_fd >= 0) {
        ssize_t ignored = write(lbk_signal_write_fd, &byte, 1);
        (void)ignored;
    }
    errno = saved;
}

int lbk_signal_pipe_install(const int *signals, int count) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    /* The write end is non-blocking: a full pipe drops the byte instead of blocking the handler. */
    fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
    lbk_signal_write_fd = fds[1];
    for (int i = 0; i < count; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = lbk_signal_handler;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        if (sigaction(signals[i], &sa, NULL) != 0) return -1;
    }
    return fds[0];
}

int lbk_malloc_trim(void) { return malloc_trim(0); }

int lbk_set_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }

static __thread void *lbk_current_loop_pointer = NULL;

void lbk_set_current_loop(void *loop) {
    lbk_current_loop_pointer = loop;
}

void *lbk_current_loop(void) {
    return lbk_current_loop_pointer;
}

// The Swift concurrency runtime's global-enqueue hook and job entry point (libswift_Concurrency,
// SWIFT_CC(swift)). Weak: without them the hook is simply not installed.
typedef void (*lbk_swift_enqueue_original)(void *job) __attribute__((swiftcall));
typedef void (*lbk_swift_enqueue_hook)(void *job, lbk_swift_enqueue_original original) __attribute__((swiftcall));
typedef struct { void *identity; uintptr_t implementation; } lbk_serial_executor_ref;
extern lbk_swift_enqueue_hook swift_task_enqueueGlobal_hook __attribute__((weak));
extern void swift_job_run(void *job, lbk_serial_executor_ref executor) __attribute__((swiftcall, weak));

static int (*lbk_loop_enqueue)(void *loop, void *job) = NULL;
// The hook that was installed before ours (SwiftNIO's executor take-over, say): jobs from threads
// that are no loop's go there, as they did before ours was installed.
static lbk_swift_enqueue_hook lbk_previous_enqueue_hook = NULL;

__attribute__((swiftcall))
static void lbk_loop_thread_enqueue_hook(void *job, lbk_swift_enqueue_original original) {
    void *loop = lbk_current_loop_pointer;
    if (loop != NULL && lbk_loop_enqueue(loop, job)) return;
    lbk_swift_enqueue_hook previous = __atomic_load_n(&lbk_previous_enqueue_hook, __ATOMIC_ACQUIRE);
    if (previous != NULL) {
        previous(job, original);
    } else {
        original(job);
    }
}

// Serializes our installs (balancers created at once on several threads): each stores the previous
// hook it saw before its compare-and-exchange, and an install working from a stale view must not
// overwrite what another one chained.
static pthread_mutex_t lbk_hook_install_lock = PTHREAD_MUTEX_INITIALIZER;

int lbk_install_loop_thread_enqueue_hook(int (*enqueue)(void *loop, void *job)) {
    if (&swift_task_enqueueGlobal_hook == NULL || swift_job_run == NULL) return 0;
    pthread_mutex_lock(&lbk_hook_install_lock);
    lbk_loop_enqueue = enqueue;
    int result;
    lbk_swift_enqueue_hook expected = __atomic_load_n(&swift_task_enqueueGlobal_hook, __ATOMIC_SEQ_CST);
    for (;;) {
        if (expected == lbk_loop_thread_enqueue_hook) {   // installed before: say how, as then
            result = __atomic_load_n(&lbk_previous_enqueue_hook, __ATOMIC_SEQ_CST) == NULL ? 1 : 2;
            break;
        }
        // Published before our hook is: a job that reaches our hook finds the previous one. A hook
        // installed by someone else in between makes the exchange fail; the loop then chains that one.
        __atomic_store_n(&lbk_previous_enqueue_hook, expected, __ATOMIC_SEQ_CST);
        if (__atomic_compare_exchange_n(&swift_task_enqueueGlobal_hook, &expected, lbk_loop_thread_enqueue_hook,
                                        0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            result = expected == NULL ? 1 : 2;
            break;
        }
    }
    pthread_mutex_unlock(&lbk_hook_install_lock);
    return result;
}

void lbk_run_job_on_global_executor(void *job) {
    lbk_serial_executor_ref generic = { NULL, 0 };
    swift_job_run(job, generic);
}

// The running task (libswift_Concurrency, SWIFT_CC(swift)); weak as above.
extern void *swift_task_getCurrent(void) __attribute__((swiftcall, weak));

uintptr_t lbk_current_task_address(void) {
    if (swift_task_getCurrent == NULL) return 0;
    return (uintptr_t)swift_task_getCurrent();
}
