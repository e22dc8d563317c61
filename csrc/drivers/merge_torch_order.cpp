// torch's float32 norm and sum orders (see merge_torch_order.h), on the kernel table's 8-lane
// primitives.
#include "drivers/merge_torch_order.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "drivers/merge_tiling.h"
#include "kernels/kernels.h"

namespace llamix {
namespace merge_detail {

OrderedFeed::OrderedFeed(int64_t tasks, int arrays, Step step)
    : tasks_(tasks), arrays_(arrays), step_(std::move(step)), slots_(slot_count(tasks, arrays)),
      data_(new float[size_t(slots_) * size_t(arrays) * size_t(kChunk)]), len_(size_t(slots_), 0),
      where_(size_t(slots_) * size_t(arrays), nullptr), own_(size_t(slots_) * size_t(arrays), nullptr),
      ready_(new std::atomic<int64_t>[size_t(slots_)]) {
    for (int64_t i = 0; i < slots_; ++i) ready_[i].store(0, std::memory_order_relaxed);
    for (size_t i = 0; i < own_.size(); ++i) own_[i] = data_.get() + i * size_t(kChunk);
}

int64_t OrderedFeed::slot_count(int64_t tasks, int arrays) {
    const int64_t fit = kRingBytes / (int64_t(std::max(arrays, 1)) * kChunk * 4);
    const int64_t slots = std::max<int64_t>(2 * int64_t(ThreadPool::instance().threads()) + 2, fit);
    return std::max<int64_t>(1, std::min<int64_t>(std::min<int64_t>(kSlots, slots), tasks));
}

size_t OrderedFeed::claim(int64_t task) {
    // the slot is free once the task `slots_` before this one has been fed
    for (int64_t spins = 0; next_.load(std::memory_order_acquire) <= task - slots_; ++spins) {
        if (aborted_.load(std::memory_order_acquire))
            throw std::runtime_error("merge: an earlier part of this tensor failed");
        drain();
        if (spins > 64) std::this_thread::yield();
    }
    return size_t(task % slots_);
}

void OrderedFeed::ready(int64_t task, size_t slot, int64_t len) {
    len_[slot] = len;
    ready_[slot].store(task + 1, std::memory_order_release);
    drain();
}

void OrderedFeed::put(int64_t task, const float* const* values, int64_t len) {
    float* const* dst = slot(task);
    for (int a = 0; a < arrays_; ++a) std::memcpy(dst[a], values[a], size_t(len) * 4);
    publish(task, len);
}

float* const* OrderedFeed::slot(int64_t task) { return own_.data() + claim(task) * size_t(arrays_); }

void OrderedFeed::publish(int64_t task, int64_t len) {
    const size_t slot = size_t(task % slots_);
    for (int a = 0; a < arrays_; ++a) where_[slot * size_t(arrays_) + size_t(a)] = own_[slot * size_t(arrays_) + size_t(a)];
    ready(task, slot, len);
}

void OrderedFeed::put_stable(int64_t task, const float* const* values, int64_t len) {
    const size_t slot = claim(task);
    for (int a = 0; a < arrays_; ++a) where_[slot * size_t(arrays_) + size_t(a)] = values[a];
    ready(task, slot, len);
}

void OrderedFeed::drain() {
    for (;;) {
        bool expected = false;
        if (!draining_.compare_exchange_strong(expected, true, std::memory_order_acquire)) return;  // someone is on it
        int64_t t = next_.load(std::memory_order_relaxed);
        std::vector<const float*> v(static_cast<size_t>(arrays_));
        while (t < tasks_ && ready_[t % slots_].load(std::memory_order_acquire) == t + 1) {
            const size_t slot = size_t(t % slots_);
            for (int a = 0; a < arrays_; ++a) v[size_t(a)] = where_[slot * size_t(arrays_) + size_t(a)];
            step_(t, v.data(), len_[slot]);
            next_.store(++t, std::memory_order_release);
        }
        draining_.store(false, std::memory_order_release);
        // a chunk marked ready while we held the flag would otherwise wait for finish()
        if (!(t < tasks_ && ready_[t % slots_].load(std::memory_order_acquire) == t + 1)) return;
    }
}

void OrderedFeed::finish() {
    drain();
    if (next_.load() != tasks_) throw std::logic_error("OrderedFeed: not every chunk was put");
}

void TorchNorm::feed(const float* x, int64_t len) {
    const int64_t main = std::max<int64_t>(0, std::min(len, full_ - pos_));
    if (main > 0) kernels().merge.sq_lanes8(lanes_, x, main);
    for (int64_t i = main; i < len; ++i) tail_.push_back(x[i]);
    pos_ += len;
}

void TorchNorm::feed_deltas(const void* x, QType tx, const void* base, QType tb, int64_t len) {
    const int64_t main = std::max<int64_t>(0, std::min(len, full_ - pos_));
    const MergeKernels& K = kernels().merge;
    if (main > 0) K.delta_sq_lanes8(lanes_, x, tx, base, tb, main);
    auto at = [](const void* p, QType t, int64_t i) {
        return static_cast<const uint8_t*>(p) + i * (t == QType::F32 ? 4 : 2);
    };
    for (int64_t i = main; i < len; ++i) {
        float d, b = 0.0f;
        K.load(at(x, tx, i), tx, &d, 1);
        if (base) {
            K.load(at(base, tb, i), tb, &b, 1);
            d = d - b;
        }
        tail_.push_back(d);
    }
    pos_ += len;
}

float TorchNorm::result() const {
    float b = lanes_[0];
    for (int j = 1; j < 8; ++j) b = b + lanes_[j];
    for (float v : tail_) {
        const float sq = v * v;
        b = b + sq;
    }
    return std::sqrt(b);
}

namespace {

int64_t ceil_log2(int64_t x) {  // ATen's utils::CeilLog2
    if (x <= 2) return 1;
    int64_t r = 0;
    for (uint64_t v = uint64_t(x - 1); v > 1; v >>= 1) ++r;
    return r + 1;
}

}  // namespace

TorchSum::TorchSum(int64_t n) : n_(n) {
    width_ = n >= 8 ? 8 : 1;  // 8-float vectors, or scalars for rows shorter than one vector
    items_ = n / width_;
    groups_ = items_ / 4;
    level_power_ = std::max<int64_t>(4, ceil_log2(groups_) / 4);
    level_step_ = int64_t(1) << level_power_;
    main_groups_ = groups_ / level_step_ * level_step_;
    acc_.assign(size_t(16 * width_), 0.0f);
}

void TorchSum::add_groups(const float* x, int64_t groups) {
    const int64_t W = width_;
    for (int64_t g = 0; g < groups;) {
        // up to the end of the current cascade block
        int64_t span = groups - g;
        if (group_ < main_groups_) span = std::min(span, level_step_ - group_ % level_step_);
        if (W == 8) {
            kernels().merge.sum_groups32(acc_.data(), x + g * 32, span);
        } else {
            for (int64_t s = 0; s < span; ++s)
                for (int k = 0; k < 4; ++k) acc_[size_t(k)] = acc_[size_t(k)] + x[(g + s) * 4 + k];
        }
        g += span;
        group_ += span;
        if (group_ <= main_groups_ && group_ % level_step_ == 0) {  // a block is complete: carry it up
            for (int64_t j = 1; j < 4; ++j) {
                for (int64_t e = 0; e < 4 * W; ++e) {
                    float& up = acc_[size_t(j * 4 * W + e)];
                    float& down = acc_[size_t((j - 1) * 4 * W + e)];
                    up = up + down;
                    down = 0.0f;
                }
                const int64_t mask = (level_step_ - 1) << (j * level_power_);
                if ((group_ & mask) != 0) break;
            }
        }
    }
}

void TorchSum::feed(const float* x, int64_t len) {
    const int64_t per_group = 4 * width_;
    const int64_t in_groups = std::max<int64_t>(0, std::min(len, groups_ * per_group - pos_));
    if (in_groups % per_group != 0) throw std::logic_error("TorchSum: feeds must cover whole groups");
    if (in_groups > 0) add_groups(x, in_groups / per_group);
    rest_.insert(rest_.end(), x + in_groups, x + len);
    pos_ += len;
}

float TorchSum::result() const {
    const int64_t W = width_;
    std::vector<float> acc(acc_);
    auto a = [&](int64_t level, int64_t k, int64_t j) -> float& { return acc[size_t((level * 4 + k) * W + j)]; };
    for (int64_t l = 1; l < 4; ++l)  // the levels into level 0
        for (int64_t k = 0; k < 4; ++k)
            for (int64_t j = 0; j < W; ++j) a(0, k, j) = a(0, k, j) + a(l, k, j);
    // the items after the whole groups into partial 0, then partials 1..3 into it
    const int64_t left_items = items_ - groups_ * 4;
    for (int64_t i = 0; i < left_items; ++i)
        for (int64_t j = 0; j < W; ++j) a(0, 0, j) = a(0, 0, j) + rest_[size_t(i * W + j)];
    for (int64_t k = 1; k < 4; ++k)
        for (int64_t j = 0; j < W; ++j) a(0, 0, j) = a(0, 0, j) + a(0, k, j);
    float total = 0.0f;
    if (W == 8) {
        for (int64_t i = left_items * W; i < int64_t(rest_.size()); ++i) total = total + rest_[size_t(i)];
        for (int64_t j = 0; j < 8; ++j) total = total + a(0, 0, j);
    } else {
        total = a(0, 0, 0);
    }
    return 0.0f + total;  // torch adds the result into a zero-filled output
}

float torch_sum(const std::vector<float>& v) {
    TorchSum s(int64_t(v.size()));
    s.feed(v.data(), int64_t(v.size()));
    return s.result();
}

}  // namespace merge_detail
}  // namespace llamix
