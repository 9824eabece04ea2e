"""What people read: figure formatting, plots and videos."""
