"""What is installed in an image: layers applied in memory, OS and package databases read."""
