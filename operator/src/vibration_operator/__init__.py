"""vibration-edge operator: validated, per-node rollouts of VibrationModel resources."""
