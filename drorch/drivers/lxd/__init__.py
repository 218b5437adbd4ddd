"""The LXD driver (`lxd_driver.LxdDriver`): instances moved server to server through LXD's migration API."""
