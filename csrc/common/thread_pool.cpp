// The persistent worker pool: worker loop (spin, then sleep), job hand-out and sizing.
#include "common/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include "common/cpu_features.h"
#include "common/setting_error.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LLAMIX_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define LLAMIX_PAUSE() __asm__ __volatile__("yield")
#else
#define LLAMIX_PAUSE() ((void)0)
#endif

namespace llamix {

namespace {
// Spin this long before a worker sleeps: long enough to cover the gap between the ops of one
// decode step, short enough not to take a core from Python (sampling, a merge's writer thread).
// Measured in time, not pause instructions: a pause costs 5 ns on some cores and 30 on others.
constexpr std::chrono::microseconds kSpinTime{50};
constexpr uint64_t kClosed = 1ull << 31;
constexpr uint64_t kJoinedMask = kClosed - 1;

// LLAMIX_THREADS: a whole number of threads (0 or unset: one per physical core); anything else is
// an error naming the variable, never read as 0.
int default_threads() {
    const char* env = std::getenv("LLAMIX_THREADS");
    if (env && *env) {
        char* end = nullptr;
        errno = 0;
        const long n = std::strtol(env, &end, 10);
        if (end == env || *end != '\0' || errno == ERANGE || n < 0 || n > max_threads())
            throw SettingError("LLAMIX_THREADS=" + std::string(env) + ": expected a number of threads from 0 to " +
                               std::to_string(max_threads()) + " (8 per CPU this process may use; 0: one per physical core)");
        if (n > 0) return static_cast<int>(n);
    }
    return physical_cores();
}
}  // namespace

int max_threads() {
    // Workers spin between jobs, so threads beyond the CPUs only take turns spinning: 4096 of them
    // on 2 CPUs made one `generate` hold a load average of 1200. A few per CPU stay allowed (tests
    // run 3-8 threads on 2-core machines to check that results do not depend on the count).
    cpu_set_t set;
    CPU_ZERO(&set);
    int cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 0;
    if (cpus <= 0) cpus = std::max(1u, std::thread::hardware_concurrency());
    return 8 * cpus;
}

ThreadPool& ThreadPool::instance() {
    static ThreadPool pool;
    return pool;
}

ThreadPool::ThreadPool() { start_workers(default_threads()); }

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::set_threads(int n) {
    if (n > max_threads())
        throw std::invalid_argument("threads: at most " + std::to_string(max_threads()) +
                                    " (8 per CPU this process may use), got " + std::to_string(n));
    if (n <= 0) n = default_threads();
    std::lock_guard<std::mutex> lock(run_mutex_);
    if (n == n_threads_) return;
    stop_workers();
    start_workers(n);
}

void ThreadPool::start_workers(int n) {
    n_threads_ = n;
    stop_ = false;
    // Workers start from the generation current now: a job published before a new thread
    // gets scheduled must still count as unseen by it.
    const uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, i, gen] { worker_main(i, gen); });
}

void ThreadPool::stop_workers() {
    {
        std::lock_guard<std::mutex> lock(sleep_mutex_);
        stop_ = true;
        generation_.fetch_add(1, std::memory_order_release);
    }
    sleep_cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
}

void ThreadPool::work_on_current_job(int thread) {
    for (;;) {
        const int64_t t = next_task_.fetch_add(1, std::memory_order_relaxed);
        if (t >= n_tasks_) break;
        try {
            (*job_)(t, thread);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex_);
            if (!error_) error_ = std::current_exception();
        }
    }
}

void ThreadPool::worker_main(int index, uint64_t seen) {
    for (;;) {
        uint64_t gen = generation_.load(std::memory_order_acquire);
        const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
        for (unsigned spin = 1; gen == seen; ++spin) {
            LLAMIX_PAUSE();
            gen = generation_.load(std::memory_order_acquire);
            if (spin % 64 == 0 && std::chrono::steady_clock::now() >= spin_until) break;
        }
        if (gen == seen) {
            std::unique_lock<std::mutex> lock(sleep_mutex_);
            sleep_cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
            gen = generation_.load(std::memory_order_acquire);
        }
        seen = gen;
        if (stop_.load(std::memory_order_acquire)) return;
        // Join the open job, if any (a late worker finds it closed and goes back to waiting).
        uint64_t s = job_state_.load(std::memory_order_acquire);
        while (!(s & kClosed)) {
            if (job_state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
                work_on_current_job(index);
                job_state_.fetch_sub(1, std::memory_order_release);
                break;
            }
        }
    }
}

void ThreadPool::run(int64_t n_tasks, TaskRef fn) {
    if (n_tasks <= 0) return;
    std::lock_guard<std::mutex> lock(run_mutex_);
    if (n_threads_ == 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
        return;
    }
    job_ = &fn;
    n_tasks_ = n_tasks;
    error_ = nullptr;
    next_task_.store(0, std::memory_order_relaxed);
    job_state_.store(uint64_t(++job_id_) << 32, std::memory_order_release);  // open, nobody inside
    {
        std::lock_guard<std::mutex> sl(sleep_mutex_);
        generation_.fetch_add(1, std::memory_order_release);
    }
    sleep_cv_.notify_all();
    work_on_current_job(0);
    // All tasks are taken: close the job, then wait for the workers still inside it.
    job_state_.fetch_or(kClosed, std::memory_order_acq_rel);
    // Spin briefly, then yield: a worker still inside the job may have lost its core (to a merge's
    // writer thread, another process), and spinning here would keep it from getting one back.
    const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
    for (unsigned spin = 1; job_state_.load(std::memory_order_acquire) & kJoinedMask; ++spin) {
        if (spin % 64 == 0 && std::chrono::steady_clock::now() >= spin_until) std::this_thread::yield();
        else LLAMIX_PAUSE();
    }
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
}

}  // namespace llamix
