"""The demo: both studies on the embedded trained tiny models, and one page comparing them.

For each model (``tiny-native``: Chameleon, native; ``tiny-llava``: LLaVA, LLM-backed) it runs
the Narrow Gate study and the head-attribution study over the synthetic held-out set, then
writes ``report.html``: the paper's native-vs-LLM-backed contrast side by side (EOI share of
text->image attention, EOI vs image knockout, EOI patching flip rate, head attribution's fit)
with links to each study's full report. Every part resumes.

Example:
    >>> summary = run_demo(DemoConfig(n=16), "results/demo")
    >>> summary.report
    PosixPath('results/demo/report.html')
"""

from hooked_vlm.studies.demo.config import DemoConfig
from hooked_vlm.studies.demo.contrast import attribution_row, narrow_gate_row
from hooked_vlm.studies.demo.runner import DemoSummary, run_demo

__all__ = ["DemoConfig", "DemoSummary", "attribution_row", "narrow_gate_row", "run_demo"]
