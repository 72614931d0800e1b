// Small C shim for Linux system interfaces that Swift's Glibc module does not export
// (sys/epoll.h, sys/eventfd.h, accept4 with SOCK_NONBLOCK). Plain functions and integer
// constants only: `struct epoll_event` is packed on x86_64 and its flag constants are an enum,
// so Swift never sees either.
#ifndef CLBKIT_SHIM_H
#define CLBKIT_SHIM_H

#include <stdint.h>

#define LBK_EPOLLIN 0x001u
#define LBK_EPOLLOUT 0x004u
#define LBK_EPOLLERR 0x008u
#define LBK_EPOLLHUP 0x010u
#define LBK_EPOLLRDHUP 0x2000u
#define LBK_EPOLLET 0x80000000u

/// epoll_create1(EPOLL_CLOEXEC). Returns the fd or -1 (errno set).
int lbk_epoll_create(void);
/// EPOLL_CTL_ADD with `events` and a 64-bit user value. Returns 0 or -1 (errno set).
int lbk_epoll_add(int epfd, int fd, uint32_t events, uint64_t data);
/// EPOLL_CTL_MOD. Returns 0 or -1 (errno set).
int lbk_epoll_mod(int epfd, int fd, uint32_t events, uint64_t data);
/// EPOLL_CTL_DEL. Returns 0 or -1 (errno set).
int lbk_epoll_del(int epfd, int fd);
/// epoll_wait that unpacks the packed events into two plain arrays. Returns the count or -1.
int lbk_epoll_wait(int epfd, uint32_t *events, uint64_t *datas, int max, int timeout_ms);

/// eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC). Returns the fd or -1.
int lbk_eventfd(void);
/// Adds 1 to an eventfd counter. Returns 0 or -1.
int lbk_eventfd_signal(int fd);
/// Resets an eventfd counter to zero (reads it). Returns 0 or -1.
int lbk_eventfd_drain(int fd);

/// accept4(SOCK_NONBLOCK | SOCK_CLOEXEC). Returns the fd or -1.
/// The peer address is written to `addr` (at least 128 bytes: a sockaddr_storage).
int lbk_accept(int fd, void *addr, uint32_t *addrlen);
/// socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0).
int lbk_socket_stream(int family);

/// CLOCK_MONOTONIC in nanoseconds. Inside a job run by an event loop (between
/// lbk_job_clock_begin and lbk_job_clock_end), up to 8 reads share one clock reading taken at the
/// first of them, the way nginx reads the time once per loop iteration: a request's work between
/// two waits reads the time a dozen times (deadlines, latency, health), and each clock_gettime
/// costs more than the rest of such a read. Each job starts with a fresh reading, so a duration
/// measured from one job to a later one (an attempt's latency) is exact to within the time a job
/// runs before its first read; a loop polling the time inside one job still sees it advance. A
/// job that blocks its thread (it should not: the whole loop waits) reads a time from before it
/// blocked for at most 7 more reads.
uint64_t lbk_monotonic_ns(void);
/// The calling (loop) thread starts running jobs: lbk_monotonic_ns shares readings from now on.
void lbk_job_clock_begin(void);
/// The next job starts: its first lbk_monotonic_ns takes a fresh reading.
void lbk_job_clock_next(void);
/// The calling thread stops running jobs: every lbk_monotonic_ns reads the clock again.
void lbk_job_clock_end(void);
/// CLOCK_REALTIME in nanoseconds since the Unix epoch.
uint64_t lbk_wall_ns(void);

/// Sets an int socket option; returns 0 or -1.
int lbk_setsockopt_int(int fd, int level, int name, int value);
/// Reads SO_ERROR of a socket (0 when none); returns -1 if getsockopt failed.
int lbk_socket_error(int fd);

/// Constants the Glibc module exposes awkwardly (as enums or macros Swift cannot import).
extern const int lbk_SOL_SOCKET;
extern const int lbk_SO_REUSEADDR;
extern const int lbk_SO_REUSEPORT;
extern const int lbk_IPPROTO_TCP;
extern const int lbk_TCP_NODELAY;
extern const int lbk_MSG_NOSIGNAL;
extern const int lbk_SHUT_WR;

/// Installs a handler (sigaction, SA_RESTART) for each of `signals` that writes the signal number
/// as one byte to a pipe; returns the pipe's read end (blocking, close-on-exec) or -1.
/// Async-signal-safe and independent of which thread receives the signal. Call once.
int lbk_signal_pipe_install(const int *signals, int count);

/// Gives freed heap memory back to the kernel (glibc `malloc_trim(0)`); returns 1 if some was.
int lbk_malloc_trim(void);

/// Keeps glibc's mmap threshold fixed at `bytes` (it otherwise grows after large frees, after
/// which large buffers come from the heap and are not returned when freed).
int lbk_set_mmap_threshold(int bytes);

/// Names the calling thread (at most 15 characters are kept).
int lbk_set_thread_name(const char *name);

/* The LBEventLoop whose thread this is (NULL on other threads): set once by the loop thread. */
void lbk_set_current_loop(void *loop);
void *lbk_current_loop(void);

/// Routes jobs that the Swift runtime sends to its global executor from a loop thread to that
/// loop instead (`swift_task_enqueueGlobal_hook`): `enqueue(loop, job)` queues the job on the
/// loop and returns 1, or returns 0 to pass the job on. A job passed on, or one from a thread
/// that is no loop's, goes to the hook installed before ours (SwiftNIO's executor take-over,
/// say) or, when there was none, to the global executor. Returns 1 when ours is the only hook,
/// 2 when it was put in front of another one, 0 when the runtime has no hook.
int lbk_install_loop_thread_enqueue_hook(int (*enqueue)(void *loop, void *job));
/// Runs `job` as the global executor would: on no particular serial or task executor.
void lbk_run_job_on_global_executor(void *job);

/// The address of the task running on this thread (0 outside a task, or without the runtime's
/// entry point): `swift_task_getCurrent`, the same as `withUnsafeCurrentTask` gives, without its
/// generic closure (~150 instructions a call).
uintptr_t lbk_current_task_address(void);

#endif
