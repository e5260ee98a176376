"""demo: a cohort built from real anatomy (MNI152) with simulated lesions, and the demo run."""
