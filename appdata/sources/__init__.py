"""Sources: the Play Store catalogue, fake users and the two clients' datasets."""
