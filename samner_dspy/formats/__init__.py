"""Results and labelled data in the formats people read and other tools load: JSON Lines records, GLiNER,
CoNLL, Label Studio, spaCy, labelled training files, the terminal view and the HTML page."""
