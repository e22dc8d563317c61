// A persistent worker pool shared by every kernel. Workers spin briefly before sleeping, so the
// many small parallel regions of one-token decoding do not pay a futex wake-up each; the calling
// thread works too and never waits for a worker that has not joined the job.
// Determinism: work is split into tasks whose boundaries never depend on the thread count, and
// each output element is written by exactly one task, so results are bit-identical for any count.
#pragma once
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

class ThreadPool {
   public:
    static ThreadPool& instance();
    ~ThreadPool();

    int threads() const { return n_threads_; }
    void set_threads(int n);  // n >= 1; 0 means the default (physical cores)

    // Runs f(task, thread) for every task in [0, n_tasks); returns when all are done.
    // `thread` is in [0, threads()) and indexes per-thread scratch space.
    template <class F>
    void parallel_for(int64_t n_tasks, F&& f) {
        TaskRef ref(f);
        run(n_tasks, ref);
    }

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

// Splits [0, n) into chunks of `grain` (rounded to `align`) independent of the thread count.
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace llamix
