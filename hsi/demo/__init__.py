"""`hsi demo`: a homeowner's first look at HSI, with nothing configured.

Three cameras ("Front Door", "Driveway", "Back Yard") upload real photographs into a camera root
of the demo's own, the way cameras upload over FTP; everything `hsi up` runs turns them into
detections, batches, analyses and events, and the terminal shows them as they arrive. Afterwards
the API keeps serving until Ctrl-C. See `session` (the run), `scene` (the script), `sandbox` (what
keeps the demo apart from a real installation) and `view` (the terminal).
"""

from hsi.demo.sandbox import DemoError
from hsi.demo.session import DemoOptions, DemoReport, run_demo

__all__ = ["DemoError", "DemoOptions", "DemoReport", "run_demo"]
