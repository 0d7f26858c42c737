"""Layers → merged tree → partitioned disk → platform format. Knows nothing of Slack or platforms."""
