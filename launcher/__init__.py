"""The composition root: the `wattline` CLI, `wattline up`, the demo portfolio and the
local-services manager. The only package that knows every service; nothing imports it
but the tests and the benchmarks."""
