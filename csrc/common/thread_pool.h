// A persistent worker pool shared by every kernel. Workers spin briefly before sleeping, so the
// many small parallel regions of one-token decoding do not pay a futex wake-up each; the calling
// thread works too and never waits for a worker that has not joined the job.
// Determinism: each output element is computed whole by one task (parallel_for) or one piece
// (parallel_ranges), never split across threads, so results are bit-identical for any count.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace llamix {

// A non-owning reference to a callable `void(int64_t task, int thread)`.
class TaskRef {
   public:
    template <class F>
    TaskRef(F& f) : obj_(static_cast<void*>(&f)), call_([](void* o, int64_t t, int th) { (*static_cast<F*>(o))(t, th); }) {}
    void operator()(int64_t task, int thread) const { call_(obj_, task, thread); }

   private:
    void* obj_;
    void (*call_)(void*, int64_t, int);
};

// The most threads set_threads and LLAMIX_THREADS accept: 8 per CPU this process may run on.
int max_threads();

class ThreadPool {
   public:
    static ThreadPool& instance();
    ~ThreadPool();

    int threads() const { return n_threads_; }
    void set_threads(int n);  // 0 <= n <= max_threads(); 0 means the default (physical cores)

    // Runs f(task, thread) for every task in [0, n_tasks); returns when all are done.
    // `thread` is in [0, threads()) and indexes per-thread scratch space.
    template <class F>
    void parallel_for(int64_t n_tasks, F&& f) {
        TaskRef ref(f);
        run(n_tasks, ref);
    }

    // Runs f(begin, end, thread) over [0, n) in pieces of `grain`. Each thread takes one
    // contiguous lane (about n / threads) front to back, then helps finish the other lanes from
    // their back ends. For streaming kernels: each core's hardware prefetcher follows one long
    // stream (many interleaved tasks restart it), and no core idles while another has work.
    // Which thread runs a piece depends on timing, so f must compute each element whole.
    template <class F>
    void parallel_ranges(int64_t n, int64_t grain, F&& f);

   private:
    ThreadPool();
    void run(int64_t n_tasks, TaskRef fn);
    void start_workers(int n);
    void stop_workers();
    void worker_main(int index, uint64_t seen);
    void work_on_current_job(int thread);

    int n_threads_ = 1;
    std::vector<std::thread> workers_;
    std::mutex run_mutex_;  // one parallel region at a time (calls may come from several Python threads)

    // Current job, published by bumping generation_. Workers join it through job_state_
    // (job id << 32 | closed bit | number of workers inside): when the caller has run out of
    // tasks it closes the job and waits only for workers that joined, never for one the OS has
    // not scheduled yet (on a busy machine that wait would cost a whole time slice).
    const TaskRef* job_ = nullptr;
    int64_t n_tasks_ = 0;
    std::atomic<int64_t> next_task_{0};
    std::atomic<uint64_t> job_state_{0};
    uint32_t job_id_ = 0;
    std::atomic<uint64_t> generation_{0};
    std::atomic<bool> stop_{false};
    std::exception_ptr error_;
    std::mutex error_mutex_;

    std::mutex sleep_mutex_;
    std::condition_variable sleep_cv_;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

namespace detail {
// One lane of parallel_ranges: the unclaimed pieces [front, back), both in one word so that a
// piece is claimed from either end by a single compare-and-swap.
struct alignas(64) Lane {
    std::atomic<uint64_t> span;
    static uint64_t pack(uint32_t front, uint32_t back) { return uint64_t(front) << 32 | back; }
    // The next piece from the front (owner) or the back (helper), or -1 when the lane is empty.
    int64_t claim(bool from_front) {
        uint64_t s = span.load(std::memory_order_relaxed);
        for (;;) {
            const uint32_t front = uint32_t(s >> 32), back = uint32_t(s);
            if (front >= back) return -1;
            const uint64_t next = from_front ? pack(front + 1, back) : pack(front, back - 1);
            if (span.compare_exchange_weak(s, next, std::memory_order_relaxed)) return from_front ? front : back - 1;
        }
    }
};
}  // namespace detail

template <class F>
void ThreadPool::parallel_ranges(int64_t n, int64_t grain, F&& f) {
    if (n <= 0) return;
    grain = std::max(grain, ceil_div(n, 0xffffffff));  // piece numbers fit in 32 bits
    const int64_t pieces = ceil_div(n, grain);
    const int lanes = int(std::min<int64_t>(pieces, n_threads_));
    std::vector<detail::Lane> lane(static_cast<size_t>(lanes));
    for (int i = 0; i < lanes; ++i)
        lane[size_t(i)].span.store(detail::Lane::pack(uint32_t(pieces * i / lanes), uint32_t(pieces * (i + 1) / lanes)),
                                   std::memory_order_relaxed);
    parallel_for(lanes, [&](int64_t own, int thread) {
        auto run = [&](int64_t piece) { f(piece * grain, std::min(n, piece * grain + grain), thread); };
        for (int64_t p; (p = lane[size_t(own)].claim(true)) >= 0;) run(p);
        for (int i = 1; i < lanes; ++i) {
            detail::Lane& other = lane[size_t((own + i) % lanes)];
            for (int64_t p; (p = other.claim(false)) >= 0;) run(p);
        }
    });
}

}  // namespace llamix
