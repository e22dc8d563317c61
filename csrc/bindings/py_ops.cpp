#include "bindings/checks.h"

namespace llamix {
void register_ops(py::module_&) {}
}  // namespace llamix
