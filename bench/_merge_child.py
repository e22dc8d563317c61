"""One timed merge in a fresh process (so peak RSS is this merge's alone); prints JSON."""
import json
import resource
import sys
import time

# Imports are not timed, and neither is their wake: numpy's OpenBLAS threads busy-wait for a while
# after they start (2^28 cycles by default), which would otherwise eat into the first tenth of a
# second of whichever merge starts right after a fast import.
SETTLE_S = 0.5

tool, config, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
if tool == "llamix":
    # As a user runs it: the command line (its console script's main(), which also freezes the
    # imports' objects for the collector), with mergekit's options below.
    import llamix.cli
    import llamix.merge  # imported on first use otherwise, inside the timed merge (mergekit's are imported here)
    t_imported = time.perf_counter()
    time.sleep(SETTLE_S)
    t1 = time.perf_counter()
    sys.argv = ["llamix", "merge", config, out, "-t", str(threads), "-q", "--seed", "0", "--no-copy-tokenizer"]
    code = llamix.cli.main()
    if code:
        sys.exit(code)
else:
    import torch
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge
    torch.set_num_threads(threads)
    t_imported = time.perf_counter()
    time.sleep(SETTLE_S)
    t1 = time.perf_counter()
    with open(config) as f:
        cfg = MergeConfiguration.model_validate(yaml.safe_load(f))
    run_merge(cfg, out, MergeOptions(copy_tokenizer=False, lazy_unpickle=False, write_model_card=False, quiet=True,
                                     device="cpu", random_seed=0))
t2 = time.perf_counter()
# VmHWM is the peak RSS of this process image; ru_maxrss would also count the parent's resident
# set at fork time, which the child inherits as its starting high-water mark.
with open("/proc/self/status") as f:
    hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"import_s": t_imported - t0, "merge_s": t2 - t1, "maxrss_mb": hwm_kb / 1024,
                  "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
