"""Simulated post-resection MRI/iUS cases and hybrid real cases with exact ground truth.

Everything produced here is SIMULATED (or, for `hybrid`, a real image pair with a known, synthetic
deformation added to the MRI).  See docs/SIMULATION.md.

Public API
----------
hybrid.make_hybrid_case(seed, magnitude_mm=5.0) -> dict
cases.make_simulated_case(seed, anatomy="mni152", shape=(256, 256, 256), spacing=0.5) -> dict
cases.write_case(case, out_dir, case_id) / cases.write_dataset(cases, out_dir)
demo.make_demo_dataset(out_dir) -> path
stress.make_stress_case(seed, anatomy="mni152", shape=(128, 128, 128), spacing=1.0) -> dict (stress cases)
"""
