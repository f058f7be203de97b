"""The notifier's pure rules: the compliance gate, templates, tokens, eligibility."""
