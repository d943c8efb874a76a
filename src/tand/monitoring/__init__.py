"""After training: what a version is and how well it does (the model card), for reviewers and the API."""
