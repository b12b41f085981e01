"""The deployed pipeline on this machine: the embedded AWS (moto) created from the synthesized stack and copied to
disk between runs (``embedded``), uploads through the batcher (``uploads``), the declared pipelines run step by step
(``pipelines``), one round's mechanics (``pipeline``), and the console and signal handling of a long local run.
``alp local`` (your frames, people in Label Studio) and ``alp demo`` (synthetic frames) are built on it."""
