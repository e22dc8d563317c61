#include "bindings/checks.h"

namespace llamix {
void register_merge(py::module_&) {}
}  // namespace llamix
