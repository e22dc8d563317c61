// An environment variable (LLAMIX_ISA, LLAMIX_THREADS) whose value llamix cannot use: refused when
// it is first read, never silently ignored. The bindings raise it as llamix.ArgumentError.
#pragma once
#include <stdexcept>

namespace llamix {

struct SettingError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

}  // namespace llamix
