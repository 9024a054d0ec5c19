"""The servers the chapters arrive at: the article's examples with every defect in the errata fixed."""
