"""The XLA flags the test processes compile with: quick compilation, the same values.

Compilation, not arithmetic, is most of the suite's time: 2,446 programs outside the notebooks.
The tests check values, which these flags change only by rounding (every test passes with and
without them). Measured on 2 cores, in worker-seconds, each flag against the suite as it was then:

- ``--xla_backend_optimization_level=0``, LLVM's fastest level: the whole suite but the notebooks,
  748 -> 546 (its programs compiling about 40 % faster).
- ``--xla_cpu_use_fusion_emitters=false``, XLA:CPU's older fusion code generator, which compiles
  in half the time, added later: 566 -> 355 (XLA compilation 330 s -> 141 s; wall time 303 s ->
  193 s).

Both slow long-running programs down, so the notebooks whose time goes to long runs execute
without them, as a reader's do (:func:`tests.notebooks.reader_environment`); the others with
them (``QUICK_COMPILE`` in tests/test_notebooks.py). No imports: conftest.py reads this before JAX.
"""

TEST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
