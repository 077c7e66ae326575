"""The health worker (faust adapter): topics, agents and cluster views over the pure rules of ``streams``."""
