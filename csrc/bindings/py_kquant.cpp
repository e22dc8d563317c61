#include "bindings/checks.h"

namespace llamix {
void register_kquant(py::module_&) {}
}  // namespace llamix
