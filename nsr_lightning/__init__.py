"""nsr_lightning: RLVR for language models on Lightning, built around positive and negative
sample reinforcement (Zhu et al., 2025, "The Surprising Effectiveness of Negative
Reinforcement in LLM Reasoning")."""

__version__ = "0.1.0"
