
import time, sys
t = time.perf_counter()
import numpy as np
X = np.random.default_rng(0).normal(size=(420, 4))
X[:140] += 4; X[140:280] -= 4
if 'dgmm' == "sklearn":
    from sklearn.mixture import GaussianMixture
    GaussianMixture(3, random_state=0).fit(X)
else:
    import dgmm
    if __name__ == "__main__":
        dgmm.GaussianMixture(3, random_state=0, scheduler='processes').fit(X)
if __name__ == "__main__":
    print(time.perf_counter() - t)
