"""``python tests/start_method_main.py METHOD MODULE ARGS...``: run ``python -m MODULE ARGS`` after
``multiprocessing.set_start_method(METHOD)``, as a user's wrapper does (torchrun runs it as a script)."""
import multiprocessing
import runpy
import sys

if __name__ == "__main__":
    method, module = sys.argv[1], sys.argv[2]
    multiprocessing.set_start_method(method)
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
