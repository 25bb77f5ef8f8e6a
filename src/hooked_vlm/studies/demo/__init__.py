"""The demo: both studies on the embedded trained tiny models, and one page comparing them.

For each embedded model (``DEMO_CHOICES``: two Chameleons, native, and a LLaVA) it runs
the Narrow Gate study and the head-attribution study over the synthetic held-out set, then
writes ``report.html``: the paper's native-vs-LLM-backed contrast side by side (EOI share of
text->image attention, EOI vs image knockout, EOI patching flip rate, head attribution's fit)
with links to each study's full report. Every part resumes.

Example:
    >>> summary = run_demo(DemoConfig(n=16), "results/demo")
    >>> summary.report
    PosixPath('results/demo/report.html')
"""

from hooked_vlm._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "DemoConfig": "hooked_vlm.studies.demo.config",
    "DemoSummary": "hooked_vlm.studies.demo.runner",
    "run_demo": "hooked_vlm.studies.demo.runner",
    "attribution_row": "hooked_vlm.studies.demo.contrast",
    "narrow_gate_row": "hooked_vlm.studies.demo.contrast",
})
