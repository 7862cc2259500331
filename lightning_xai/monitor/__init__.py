"""The callback's machinery, one job per module (internal: the public API is ``lightning_xai.__all__``).

How one validation run flows, top to bottom:

- :mod:`~lightning_xai.monitor.settings`: the checks of ``AttributionMonitor(...)``'s arguments
  and of the methods against the model (strict, before the first training step);
- :mod:`~lightning_xai.monitor.collector`: what the hooks gather from batches (probe candidates,
  shortcut test images, the reservoir of training images);
- :mod:`~lightning_xai.monitor.budget`: when to run and when to skip (schedule, ``max_overhead``,
  ``max_seconds``), as pure decisions with their reasons, and the cost counters;
- :mod:`~lightning_xai.monitor.model_io`: the one path from images to the model (device, dtype,
  precision plugin) and its predictions;
- :mod:`~lightning_xai.monitor.engine`: one run's work: the maps, then the analyses;
- :mod:`~lightning_xai.monitor.analyses`: stability, shortcuts, faithfulness: typed reports,
  no tag names, no warnings (the shortcut checks: :mod:`~lightning_xai.monitor.shortcut_detector`,
  one candidate's test: :mod:`~lightning_xai.monitor.shortcut_verdicts`);
- :mod:`~lightning_xai.monitor.recorder`: the only place that turns reports into tags, messages
  and files (with :mod:`~lightning_xai.monitor.tags`, every tag name, and
  :mod:`~lightning_xai.monitor.messages`, every sentence the monitor says).
"""

__all__: list[str] = []
