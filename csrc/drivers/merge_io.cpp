// Reads of merge inputs (pread of file-backed tensors into per-thread buffers) and the
// working-dtype rounding applied on load and store.
#include "drivers/merge_io.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace llamix {
namespace merge_detail {

namespace {

const void* at(MergeInput in, int64_t offset) {
    return static_cast<const uint8_t*>(in.data) + offset * type_size(in.type);
}

void read_exact(int fd, void* dst, int64_t bytes, int64_t offset) {
    auto* p = static_cast<uint8_t*>(dst);
    while (bytes > 0) {
        const ssize_t got = ::pread(fd, p, size_t(bytes), off_t(offset));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            throw std::runtime_error("merge: reading an input tensor failed at byte " + std::to_string(offset) + ": " +
                                     (got == 0 ? std::string("unexpected end of file") : std::strerror(errno)));
        p += got, bytes -= got, offset += got;
    }
}

void write_exact(int fd, const uint8_t* p, int64_t bytes, int64_t offset) {
    while (bytes > 0) {
        const ssize_t put = ::pwrite(fd, p, size_t(bytes), off_t(offset));
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0)
            throw std::runtime_error("merge: writing the output failed at byte " + std::to_string(offset) + ": " +
                                     (put == 0 ? std::string("nothing written") : std::strerror(errno)));
        p += put, bytes -= put, offset += put;
    }
}

// File outputs. Each thread stages the bytes it stores in one contiguous run of the file (up to
// kStageBytes: few, large pwrite calls, the bytes still in L2 when they are copied to the page
// cache). A full run goes to a queue, and whichever thread takes the writer's lock writes the
// queue out while the others go on computing: writes into one file hold its inode lock (tmpfs,
// ext4), and two threads writing at once spin on it in the kernel (measured: 2.63 s of CPU
// against 1.76 s for linear's bench merge), so one thread writes at a time and only waits for
// the lock when kMaxQueued runs are waiting (bounded memory). One merge writes to files at a
// time (file_merge_mutex), so every staged byte belongs to it.
constexpr int64_t kStageBytes = int64_t(256) << 10;
constexpr int64_t kRunBytes = 2 * kStageBytes;  // a run's buffer: a full stage plus one store_out (<= 256 KB)
constexpr size_t kMaxQueued = 8;

struct Run {
    int fd = -1;
    int64_t pos = 0;   // file offset of bytes[0]
    int64_t used = 0;  // bytes staged
    int64_t size = 0;  // bytes' capacity
    std::unique_ptr<uint8_t[]> bytes;  // uninitialised
};

struct Output {
    std::mutex write;  // held while writing the queue out
    std::mutex queue_mutex;
    std::vector<Run> queue;  // full runs waiting, in no particular order
    std::vector<Run> free;   // written runs, their buffers for reuse (a few)
    std::vector<Run*> stages;  // every thread's run being filled
};

// Never destroyed: a pool thread may end after static destructors ran.
Output& output() {
    static auto* o = new Output;
    return *o;
}

Run& my_run() {
    struct Registered {
        Run run;
        Registered() {
            std::lock_guard<std::mutex> lock(output().queue_mutex);
            output().stages.push_back(&run);
        }
        ~Registered() {
            std::lock_guard<std::mutex> lock(output().queue_mutex);
            auto& all = output().stages;
            all.erase(std::remove(all.begin(), all.end(), &run), all.end());
        }
    };
    static thread_local Registered r;
    return r.run;
}

// Move a thread's filled run to the queue and give the thread a free buffer (queue_mutex held).
void enqueue_locked(Output& o, Run& run) {
    o.queue.push_back(std::move(run));
    run = Run{};
    if (!o.free.empty()) {
        run.bytes = std::move(o.free.back().bytes);
        run.size = o.free.back().size;
        o.free.pop_back();
    }
}

// Write the queued runs out (wait: for the writer's lock; else only if no other thread holds it).
void drain(bool wait) {
    Output& o = output();
    std::unique_lock<std::mutex> writing(o.write, std::defer_lock);
    if (wait) writing.lock();
    else if (!writing.try_lock()) return;
    for (;;) {
        Run r;
        {
            std::lock_guard<std::mutex> lock(o.queue_mutex);
            if (o.queue.empty()) return;
            r = std::move(o.queue.back());
            o.queue.pop_back();
        }
        write_exact(r.fd, r.bytes.get(), r.used, r.pos);
        std::lock_guard<std::mutex> lock(o.queue_mutex);
        if (o.free.size() < kMaxQueued + 4) o.free.push_back(std::move(r));
    }
}

// Queue the calling thread's run (if any), writing the queue out unless another thread is.
void queue_run(Run& run) {
    if (run.used == 0) return;
    Output& o = output();
    size_t waiting;
    {
        std::lock_guard<std::mutex> lock(o.queue_mutex);
        enqueue_locked(o, run);
        waiting = o.queue.size();
    }
    drain(waiting > kMaxQueued);
}

// Room for `bytes` more at the end of the calling thread's run, at element `off` of the output
// (a run that does not end there is queued first).
uint8_t* stage_for(MergeOutput out, int64_t off, int64_t bytes) {
    Run& run = my_run();
    const int64_t pos = out.file_offset + off * type_size(out.type);
    if (run.used > 0 && (run.fd != out.fd || run.pos + run.used != pos)) queue_run(run);
    if (run.used == 0) run.fd = out.fd, run.pos = pos;
    if (run.size < run.used + bytes) {
        const int64_t size = std::max(kRunBytes, run.used + bytes);
        std::unique_ptr<uint8_t[]> grown(new uint8_t[size_t(size)]);
        if (run.used > 0) std::memcpy(grown.get(), run.bytes.get(), size_t(run.used));
        run.bytes = std::move(grown);
        run.size = size;
    }
    uint8_t* p = run.bytes.get() + run.used;
    run.used += bytes;
    return p;
}

void staged() {
    Run& run = my_run();
    if (run.used >= kStageBytes) queue_run(run);
}

// A per-thread byte buffer; `slot` tells apart the buffers one task holds at the same time.
uint8_t* thread_buffer(int slot, int64_t bytes) {
    static thread_local std::vector<std::vector<uint8_t>> buffers;
    if (buffers.size() <= size_t(slot)) buffers.resize(size_t(slot) + 1);
    std::vector<uint8_t>& b = buffers[size_t(slot)];
    if (b.size() < size_t(bytes)) b.resize(size_t(bytes));
    return b.data();
}

// Round float32 values to the working dtype and back (mergekit casts inputs to `dtype` on load).
void round_to(QType work, float* x, int64_t n) {
    if (work == QType::F32) return;
    const MergeKernels& K = kernels().merge;
    uint16_t tmp[1024];
    for (int64_t i = 0; i < n; i += 1024) {
        const int64_t m = std::min<int64_t>(1024, n - i);
        K.store(x + i, tmp, work, m);
        K.load(tmp, work, x + i, m);
    }
}

}  // namespace

const uint8_t* fetch(MergeInput in, int64_t off, int64_t len, int slot) {
    if (in.fd < 0) return static_cast<const uint8_t*>(at(in, off));
    const int64_t size = type_size(in.type);
    uint8_t* buf = thread_buffer(slot, len * size);
    read_exact(in.fd, buf, len * size, in.file_offset + off * size);
    return buf;
}

void copy_raw(MergeInput in, int64_t off, int64_t len, void* dst) {
    const int64_t size = type_size(in.type);
    if (in.fd >= 0) read_exact(in.fd, dst, len * size, in.file_offset + off * size);
    else std::memcpy(dst, at(in, off), size_t(len * size));
}

void load_work(const MergeCommon& c, MergeInput in, int64_t off, int64_t len, float* dst) {
    if (in.fd >= 0 && in.type == QType::F32) {
        read_exact(in.fd, dst, len * 4, in.file_offset + off * 4);  // already float32: straight in
    } else {
        kernels().merge.load(fetch(in, off, len, 0), in.type, dst, len);
    }
    if (c.work != QType::F32 && in.type != c.work) round_to(c.work, dst, len);
}

void store_out(const MergeCommon& c, float* x, MergeOutput out, int64_t off, int64_t len) {
    if (c.work != QType::F32 && c.work != out.type) round_to(c.work, x, len);
    if (out.fd >= 0) {
        kernels().merge.store(x, stage_for(out, off, len * type_size(out.type)), out.type, len);
        staged();
        return;
    }
    kernels().merge.store(x, static_cast<uint8_t*>(out.data) + off * type_size(out.type), out.type, len);
}

void store_raw(MergeOutput out, const void* src, int64_t off, int64_t len) {
    const int64_t bytes = len * type_size(out.type);
    if (out.fd >= 0) {
        std::memcpy(stage_for(out, off, bytes), src, size_t(bytes));
        staged();
        return;
    }
    std::memcpy(static_cast<uint8_t*>(out.data) + off * type_size(out.type), src, size_t(bytes));
}

std::mutex& file_merge_mutex() {
    static auto* m = new std::mutex;
    return *m;
}

void finish_output(bool ok) {
    Output& o = output();
    if (ok) {
        {
            std::lock_guard<std::mutex> lock(o.queue_mutex);
            for (Run* run : o.stages)
                if (run->used > 0) enqueue_locked(o, *run);
        }
        try {
            drain(true);
            return;
        } catch (...) {
            finish_output(false);
            throw;
        }
    }
    std::lock_guard<std::mutex> writing(o.write);
    std::lock_guard<std::mutex> lock(o.queue_mutex);
    for (Run* run : o.stages) run->used = 0;
    for (Run& r : o.queue)
        if (o.free.size() < kMaxQueued + 4) o.free.push_back(std::move(r));
    o.queue.clear();
}

}  // namespace merge_detail
}  // namespace llamix
