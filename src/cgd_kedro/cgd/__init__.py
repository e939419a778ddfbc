"""CGD: CLIP-guided data separation (scores and split) and CLIP-guided unlearning."""
